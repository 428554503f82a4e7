"""Pre-training algorithms."""
from .m3i import M3I, M3IDecoder

__all__ = ['M3I', 'M3IDecoder']
