# Runtime shared by the M3I pre-training configs (mmpretrain scope, m3i_mm modules).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['m3i_mm'], allow_failed_imports=False)

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # m3i_mm's CheckpointHook: written atomically, old ones deleted only after (README
    # "Reliability"); tools/train.py uses it for any config.
    checkpoint=dict(type='m3i_mm.CheckpointHook', by_epoch=False, interval=5000,
                    max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'))
# Bit-exact --resume: the sampler's position is saved, and every random draw is a function
# of the seed and the iteration (model) or of the sample's place in the stream (data).
# BadSampleReportHook logs the bad samples of each source and keeps the counts in checkpoints.
custom_hooks = [dict(type='m3i_mm.SamplerStateHook'), dict(type='m3i_mm.IterationSeedHook'),
                dict(type='m3i_mm.BadSampleReportHook', interval=1000)]

env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=False, window_size=20)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, diff_rank_seed=True)
