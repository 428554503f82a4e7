"""Multi-source data: image-text pairs (manifests, tar shards), labelled and unlabelled
images, one dataset over all of them, and a ratio-keeping, distributed, resumable sampler.

In a config (``default_scope = 'mmpretrain'``)::

    train_dataloader = dict(
        batch_size=64, num_workers=8, collate_fn=dict(type='default_collate'),
        dataset=dict(
            type='m3i_mm.MultiSourceDataset',
            sources=[
                dict(type='ImageTextDataset', name='laion', data_root='data/laion400m',
                     shards='{00000..41407}.tar'),
                dict(type='ImageTextDataset', name='cc12m', data_root='data/cc12m',
                     ann_file='cc12m.tsv', columns=['url', 'caption'], path_key='url'),
                dict(type='LabelledImageDataset', name='in1k',
                     dataset=dict(type='ImageNet', data_root='data/imagenet', split='train')),
                dict(type='UnlabelledImageDataset', name='raw', data_root='data/raw')],
            pipeline=[dict(type='RandomResizedCrop', scale=224),
                      dict(type='PackInputs', meta_keys=('source', 'caption'))]),
        sampler=dict(type='m3i_mm.MultiSourceSampler', batch_size=64,
                     ratios=[0.6, 0.2, 0.1, 0.1], mode='mixed', infinite=True))
    custom_hooks = [dict(type='m3i_mm.SamplerStateHook'),     # exact mid-epoch resume
                    dict(type='m3i_mm.IterationSeedHook'),    # bit-exact random draws
                    dict(type='m3i_mm.BadSampleReportHook')]  # bad samples per source

Image-text formats (:class:`ImageTextDataset`): JSONL/CSV/TSV manifests (TSV/CSV with or
without a header row), parquet URL lists, WebDataset tar shards (img2dataset's
``webdataset`` output) and parquet files with embedded images (its ``parquet`` output).
"""
from .base import DECODE_BACKENDS, BadSampleError, ImageSource, decode_image
from .image_folders import LabelledImageDataset, UnlabelledImageDataset
from .image_text import ImageTextDataset
from .inaturalist import INaturalist2018
from .multi_source import MultiSourceDataset, TooManyBadSamplesError
from .multi_source_sampler import MultiSourceSampler
from .permutation import BlockShuffle, feistel_permute
from .transforms import M3IViews, PackM3IInputs

__all__ = [
    'DECODE_BACKENDS', 'BadSampleError', 'BlockShuffle', 'INaturalist2018', 'ImageSource',
    'ImageTextDataset',
    'LabelledImageDataset', 'M3IViews', 'MultiSourceDataset', 'MultiSourceSampler',
    'PackM3IInputs',
    'TooManyBadSamplesError', 'UnlabelledImageDataset', 'decode_image', 'feistel_permute'
]
