"""Custom operators."""
from .dcnv3 import dcnv3

__all__ = ['dcnv3']
