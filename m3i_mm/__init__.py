"""m3i_mm: M3I all-in-one pre-training and InternImage backbones for OpenMMLab."""
from .version import __version__
from .utils.safe_globals import allow_mmengine_checkpoint_globals

allow_mmengine_checkpoint_globals()
from . import zoo  # noqa: F401,E402  (registers the m3i:// checkpoint scheme)

__all__ = ['__version__']
