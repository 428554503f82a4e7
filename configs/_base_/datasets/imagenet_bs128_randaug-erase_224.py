# ImageNet-1k at 224 px for training from scratch: random resized crop, flip, RandAugment
# (m9, mstd 0.5, increasing), random erasing 0.25; evaluation resizes the short side to 256
# and takes the central 224 crop (bicubic everywhere).
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader
