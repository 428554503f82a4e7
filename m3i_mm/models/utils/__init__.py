"""Helpers shared by the models (no registered modules)."""
from .dist_utils import (all_gather_local_grad, all_gather_variable, all_gather_with_grad,
                         all_reduce_sum, get_rank, get_world_size, is_distributed)

__all__ = [
    'is_distributed', 'get_world_size', 'get_rank', 'all_reduce_sum', 'all_gather_with_grad',
    'all_gather_local_grad', 'all_gather_variable'
]
