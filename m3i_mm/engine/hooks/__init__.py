"""Engine hooks of the m3i_mm scope."""
from .bad_sample_report_hook import BadSampleReportHook
from .checkpoint_coverage_hook import (CheckpointCoverageHook, CheckpointMismatchError,
                                       check_checkpoint_coverage)
from .checkpoint_hook import CheckpointHook
from .iteration_seed_hook import IterationSeedHook
from .sampler_state_hook import SamplerStateHook

__all__ = ['BadSampleReportHook', 'CheckpointCoverageHook', 'CheckpointHook',
           'CheckpointMismatchError', 'IterationSeedHook', 'SamplerStateHook',
           'check_checkpoint_coverage']
