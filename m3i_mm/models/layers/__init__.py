"""Small single-purpose layers."""
from .dcnv3 import (DCNv3, ChannelsLastConv2d, DepthwiseConvNormAct, activate,  # noqa: F401
                    eager_inference)
from .block_mask import BlockMaskGenerator, expand_patch_mask  # noqa: F401
from .pos_embed import (get_1d_sincos_pos_embed, get_2d_sincos_pos_embed,  # noqa: F401
                        get_2d_sincos_relative_pos_embed, relative_patch_positions)
