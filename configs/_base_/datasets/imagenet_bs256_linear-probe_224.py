# ImageNet-1k at 224 px for linear probing: random resized crop and flip only. Evaluation:
# short side 256, central 224 crop.
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py'

train_dataloader = dict(batch_size=256, drop_last=True)
val_dataloader = dict(batch_size=256)
test_dataloader = val_dataloader
