"""MI heads: Gaussian (regression) and Boltzmann (class embeddings / InfoNCE)."""
from .boltzmann_mi_head import BoltzmannMIHead
from .gaussian_mi_head import GaussianMIHead

__all__ = ['GaussianMIHead', 'BoltzmannMIHead']
