"""Every choice of the M3I pre-training that the paper does not state carries its ``[A]``
label: in ``m3i_mm/models/selfsup/m3i.py`` where it is set, and in the header of each M3I
config (issue 23, item 7). Which assumptions a config must name follows from what the config
builds, so a config that gains a term or a text encoder must label it.
"""
import glob
import os.path as osp
import re

import pytest

from m3i_mm.models.selfsup import m3i as m3i_module
from tests.configs.test_all_configs import CONFIG_ROOT, load

M3I_CONFIGS = sorted(
    osp.relpath(p, CONFIG_ROOT)
    for p in glob.glob(osp.join(CONFIG_ROOT, 'm3i', '**', '*.py'), recursive=True)
    if '_base_' not in p)
FULL_CONFIGS = [c for c in M3I_CONFIGS if re.fullmatch(r'm3i/m3i_internimage-[tblh]_.*', c)]
T_CONFIG = 'm3i/m3i_internimage-t_16xb128-100k_in1k-cc12m.py'


def header(config: str) -> str:
    """The comment block before ``_base_``, one line per entry, continuation lines joined."""
    with open(osp.join(CONFIG_ROOT, config)) as f:
        text = f.read()
    lines = [line[2:] for line in text[:text.index('_base_ = ')].splitlines()
             if line.startswith('#')]
    entries = []
    for line in lines:
        if line.startswith('    ') and entries:
            entries[-1] += ' ' + line.strip()
        else:
            entries.append(line.strip())
    return '\n'.join(entries)


def labelled(text: str, *words: str) -> bool:
    """Whether an ``[A]`` entry of ``text`` mentions all ``words``."""
    return any('[A]' in entry and all(w.lower() in entry.lower() for w in words)
               for entry in text.split('\n'))


def required_topics(config: str) -> list:
    """The assumptions a full M3I config must name, from what it builds."""
    model = load(config).model
    topics = [('data', ), ('optimisation', 'betas', 'clipping', 'warm-up')]
    if model.get('mix', True):
        topics += [('mixing', 'pairing rule', 'mixing ratio', 'block shape')]
    topics += [('loss', 'weights'), ('decoder', )]
    if (model.get('dense_head') or {}).get('unigrad_lambda'):
        topics += [('UniGrad', )]
    if model.get('same_view_target', 'feature') == 'feature':
        topics += [('EMA', '0.995')]
    if model.get('label_head'):
        topics += [('class table', 'temperature')]
    if model.get('caption_head'):
        topics += [('text encoder', )]
    return topics


@pytest.mark.parametrize('config', FULL_CONFIGS)
def test_full_config_headers_label_every_assumption(config):
    text = header(config)
    if config == T_CONFIG or 'internimage-h_' in config:
        topics = required_topics(config)
    else:  # B and L name what they change and refer to the T config's list for the rest
        assert osp.basename(T_CONFIG) in text and labelled(text, 'InternImage-')
        topics = [('text encoder', )]
        if 'in22k' in config:
            topics.append(('data', 'ImageNet-22k'))
    missing = [t for t in topics if not labelled(text, *t)]
    assert not missing, (config, missing)


@pytest.mark.parametrize('config', M3I_CONFIGS)
def test_pretrained_text_encoder_is_called_a_partial_distillation(config):
    """A config that starts its caption target from pretrained text weights says so, and
    offers the from-scratch text encoder."""
    encoder = load(config).model.get('text_encoder')
    if not encoder or encoder.get('from_scratch', False) or encoder.get('config'):
        return
    text = header(config)
    assert labelled(text, 'partly distilled from'), config
    if 'clip' in str(encoder.get('model_name_or_path', '')).lower():
        assert 'HFTextEncoder(from_scratch=True)' in text, config


@pytest.mark.parametrize('config', [c for c in M3I_CONFIGS if c not in FULL_CONFIGS])
def test_other_m3i_configs_refer_to_the_assumptions(config):
    text = header(config)
    assert '[A]' in text, config


def test_m3i_module_labels_its_assumptions_where_they_are_set():
    doc = m3i_module.__doc__
    for words in [('pairing rule', ), ('mixing ratio', ), ('block shape', ), ('EMA schedule', ),
                  ('class table', ), ('text encoder', 'partly distilled from CLIP',
                                      'HFTextEncoder(from_scratch=True)'),
                  ('Loss', 'weights'), ('semantic', 'both images'), ('Decoder', )]:
        paragraphs = [p for p in re.split(r'\n(?=\d\. )', doc) if '[A]' in p]
        assert any(all(w in p for w in words) for p in paragraphs), words
    args = m3i_module.M3I.__doc__
    for name in ('mix', 'mask_ratio', 'mask_cfg', 'same_view_target', 'loss_weights',
                 'dense_head', 'label_head', 'caption_head', 'text_encoder', 'ema_momentum'):
        entry = re.search(rf'\n\s+{name}: (.*?)(?=\n\s+\w+: |\Z)', args, re.S).group(1)
        assert '[A]' in entry, name
    source = open(m3i_module.__file__).read()
    for code in ('weights = {**dict(same=1.0', 'self.target_encoder = CosineEMA(',
                 'generator = BlockMaskGenerator(', 'index_b = torch.roll(',
                 "for tag, index, feats in pred['sem']:"):
        before = source[:source.index(code)].rstrip().splitlines()[-1]
        assert '[A]' in before, code
