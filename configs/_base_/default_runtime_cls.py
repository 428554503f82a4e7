# mmpretrain's default runtime with the checkpoint retention of the official classification
# code (classification/main.py and utils.py: a checkpoint after every epoch, `SAVE_FREQ` 1;
# older ones deleted, `--save-ckpt-num` 1; evaluation every epoch, `EVAL_FREQ` 1; the best
# top-1 kept apart): the newest checkpoint and the best by top-1.
# With the EMAHook of the ImageNet recipes, mmengine evaluates the EMA weights only, so the
# best is chosen by the EMA's top-1 (the official `ckpt_epoch_ema_best.pth`); the official
# code also keeps the best of the plain weights (`ckpt_epoch_best.pth`), which has no
# counterpart here (every checkpoint holds both sets of weights).
_base_ = 'mmpretrain::_base_/default_runtime.py'

default_hooks = dict(
    checkpoint=dict(interval=1, max_keep_ckpts=1, save_best='accuracy/top1', rule='greater'))
