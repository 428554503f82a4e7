"""Training strategies of the m3i_mm scope (for mmengine's ``FlexibleRunner``)."""
from .fsdp2 import DEFAULT_SHARD_MODULES, FSDP2Strategy, consolidate_sharded_checkpoint

__all__ = ['FSDP2Strategy', 'DEFAULT_SHARD_MODULES', 'consolidate_sharded_checkpoint']
