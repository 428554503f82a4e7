"""m3i_mm: M3I all-in-one pre-training and InternImage backbones for OpenMMLab."""
from .version import __version__
from .utils.safe_globals import allow_mmengine_checkpoint_globals

allow_mmengine_checkpoint_globals()
from . import zoo  # noqa: F401,E402  (registers the m3i:// checkpoint scheme)
from .registry import register_plain_model_names  # noqa: E402

register_plain_model_names()  # type='InternImage' in every scope (see m3i_mm/registry.py)

__all__ = ['__version__']
