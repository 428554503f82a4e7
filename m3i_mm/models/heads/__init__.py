"""MI heads: Gaussian (regression) and Boltzmann (class embeddings / InfoNCE); a linear
classifier that also reads per-sample metadata (the official iNaturalist head)."""
from .boltzmann_mi_head import BoltzmannMIHead
from .gaussian_mi_head import GaussianMIHead
from .metadata_cls_head import MetadataLinearClsHead

__all__ = ['GaussianMIHead', 'BoltzmannMIHead', 'MetadataLinearClsHead']
