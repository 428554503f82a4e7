"""m3i_mm: M3I all-in-one pre-training and InternImage backbones for OpenMMLab."""
from .version import __version__
from .utils.safe_globals import allow_mmengine_checkpoint_globals

allow_mmengine_checkpoint_globals()

__all__ = ['__version__']
