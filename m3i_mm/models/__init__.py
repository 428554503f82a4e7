"""Models registered in the m3i_mm scope (imported lazily by the MODELS registry)."""
from . import backbones, heads, layers, necks, selfsup, text  # noqa: F401
