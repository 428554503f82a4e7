"""The DCNv3 operator (InternImage): one implementation, three backends."""
from .function import BACKENDS, ENV_BACKEND, DCNv3BackendError, dcnv3, resolve_backend
from .geometry import DCNv3Geometry, make_geometry

__all__ = ['dcnv3', 'resolve_backend', 'BACKENDS', 'ENV_BACKEND', 'DCNv3BackendError',
           'DCNv3Geometry', 'make_geometry']
