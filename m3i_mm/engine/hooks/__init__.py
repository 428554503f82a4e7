"""Engine hooks of the m3i_mm scope."""
from .sampler_state_hook import SamplerStateHook

__all__ = ['SamplerStateHook']
