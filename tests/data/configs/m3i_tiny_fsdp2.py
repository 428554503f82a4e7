# The CPU-sized M3I job (EMA target encoder, labels, mixed pairs) under FlexibleRunner with
# m3i_mm.FSDP2Strategy, for tests: 3 iterations, one checkpoint. Run it from a directory
# holding data/demo/m3i (m3i_mm.demo.photo_datasets.write_m3i_demo_sources).
_base_ = ['../../../configs/m3i/m3i_internimage-tiny_1xb8-300it_photos.py']

model = dict(caption_head=None, text_encoder=None)  # no text model to load in tests
train_dataloader = dict(batch_size=4, sampler=dict(batch_size=4))
runner_type = 'FlexibleRunner'
strategy = dict(type='m3i_mm.FSDP2Strategy')
total_iters = 3
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=total_iters)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=total_iters))
log_processor = dict(window_size=1)
