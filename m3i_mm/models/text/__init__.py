"""Text encoders for caption targets."""
from .hf_text_encoder import HFTextEncoder

__all__ = ['HFTextEncoder']
