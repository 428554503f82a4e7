# ImageNet-1k fine-tuning without layer-wise decay, the official recipe of the released L/XL/
# H/G ImageNet-1k numbers (configs/without_lr_decay/internimage_*_22kto1k_*.yaml; official
# README: "The paper results were obtained from models trained with configs in
# configs/without_lr_decay"): the fine-tuning recipe of imagenet_bs512_adamw_layer-decay_20e.py
# with every parameter at the base lr (the official DCN_LR_MUL acts only together with layer
# decay, so it is off too).
_base_ = './imagenet_bs512_adamw_layer-decay_20e.py'

optim_wrapper = dict(paramwise_cfg=dict(_delete_=True, layer_decay_rate=1.0,
                                        layer_decay_numbering='classification'))
