"""FSDP2Strategy on 2 CPU processes (gloo): DDP-equivalent training, EMA, checkpoints, runner.

The distributed scenarios run once per module in a spawned process pair
(``fsdp2_helpers.run_scenarios``); each test checks one property of what they recorded,
against a float64 reference computed here or against an uninterrupted run. The last test
trains the real (tiny) M3I through tools/dist_train.sh and FlexibleRunner.
"""
import glob
import os
import os.path as osp
import re

import pytest
import torch
from torch.distributed.tensor import DTensor

from tests.conftest import TEST_CONFIGS, free_port, run_tool
from tests.engine import fsdp2_helpers as h
from tests.models.utils.dist_helpers import run_distributed


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp('fsdp2'))
    run_distributed(h.run_scenarios, out_dir)
    loaded = [torch.load(osp.join(out_dir, f'results_rank{r}.pt'), weights_only=True)
              for r in range(2)]
    return loaded


def assert_states_close(actual: dict, expected: dict, atol: float, rtol: float) -> None:
    assert sorted(actual) == sorted(expected)
    for key in expected:
        torch.testing.assert_close(actual[key].double(), expected[key].double(), atol=atol,
                                   rtol=rtol, msg=lambda m, key=key: f'{key}: {m}')


@pytest.mark.slow  # 2 spawned processes
@pytest.mark.parametrize('variant', ['plain', 'checkpointed'])
def test_training_equals_single_process_training_on_the_global_batch(results, variant):
    rank0, rank1 = (r['equivalence'][variant] for r in results)
    # prepare() broadcast rank 0's initial weights (rank 1 was seeded differently).
    torch.manual_seed(0)
    assert_states_close(rank0['initial'], h.TinyNet().state_dict(), atol=0, rtol=0)
    assert rank1['initial'] == {} and rank1['final'] == {}  # full state dicts live on rank 0

    # Parameters are sharded on dim 0, unevenly (7 rows: 4 + 3), one shard even empty.
    assert rank0['local_shapes']['stem.weight'] == (4, h.IN_DIM)
    assert rank1['local_shapes']['stem.weight'] == (3, h.IN_DIM)
    assert rank1['local_shapes']['blocks.0.gate'] == (0, h.DIM)
    assert rank0['local_shapes']['frozen'] == (2, )  # frozen params are sharded too
    assert rank0['local_shapes']['temperature'] is None  # 0-d: replicated, grads averaged
    # The optimizer (layer decay constructor) was built from the sharded parameters.
    assert rank0['optimizer_params_are_model_dtensors']
    assert rank1['optimizer_params_are_model_dtensors']
    lr_scales = {round(lr / h.LR, 6) for lr in rank0['group_lrs']}
    assert lr_scales == {round(h.LAYER_DECAY**i, 6) for i in range(h.DEPTH + 2)}

    expected, expected_norms = h.reference_training(rank0['initial'])
    assert_states_close(rank0['final'], expected, atol=2e-6, rtol=1e-5)
    # Clipping used the global gradient norm (not a rank's shard) and did clip.
    assert rank0['grad_norms'] == pytest.approx(expected_norms, rel=1e-5)
    assert rank1['grad_norms'] == rank0['grad_norms']
    assert min(expected_norms) > h.MAX_NORM
    assert not torch.allclose(rank0['final']['stem.weight'], rank0['initial']['stem.weight'])


@pytest.mark.slow  # 2 spawned processes
def test_bf16_mixed_precision_computes_in_bf16_and_keeps_fp32_state(results):
    rank0 = results[0]['equivalence']['bf16']
    assert rank0['compute_dtype'] == 'torch.bfloat16'
    assert rank0['stored_dtypes'] == ['torch.float32']  # shards and optimizer states
    expected, expected_norms = h.reference_training(rank0['initial'])
    # bf16 rounding (8 bits of mantissa) in the forward and backward, fp32 updates.
    assert_states_close(rank0['final'], expected, atol=1e-3, rtol=0)
    assert rank0['grad_norms'] == pytest.approx(expected_norms, rel=2e-2)
    plain = results[0]['equivalence']['plain']['final']
    assert any(not torch.equal(rank0['final'][k], plain[k]) for k in plain)


@pytest.mark.slow  # 2 spawned processes
def test_ema_target_encoder_is_the_ema_of_the_gathered_online_weights(results):
    rank0, rank1 = results[0]['ema'], results[1]['ema']
    expected = h.reference_ema(rank0['online'])
    final = rank0['final']
    ema = {k: final['target_encoder.module.0.' + k[len('backbone.'):]]
           if k.startswith('backbone.') else final['target_encoder.module.1.' + k[len('neck.'):]]
           for k in expected}
    assert_states_close(ema, expected, atol=1e-6, rtol=1e-6)
    assert int(final['target_encoder.steps']) == h.STEPS
    # The test can fail: the EMA lags the online weights it averages.
    last_online = rank0['online'][-1]['backbone.stem.weight'].double()
    assert (expected['backbone.stem.weight'] - last_online).abs().max() > 1e-3
    # The EMA copy is sharded like its source, and freed again after its forward.
    for r in (rank0, rank1):
        assert r['local_shapes']['target_encoder.module.0.stem.weight'] == \
            r['local_shapes']['backbone.stem.weight']
        assert r['ema_sharded_after_step']
    assert rank1['local_shapes']['target_encoder.module.0.stem.weight'] == (3, h.IN_DIM)
    assert rank1['local_shapes']['target_encoder.module.0.gain'] is None  # 0-d: replicated


@pytest.mark.slow  # 2 spawned processes
def test_ema_update_while_its_source_is_gathered_is_a_clear_error(results):
    for r in results:
        message = r['ema']['misplaced_update_error']
        assert message is not None, 'averaging a gathered source with shards went through'
        assert "averaged parameter '0.stem.weight'" in message
        assert 'unsharded tensor (7, 5)' in message


@pytest.mark.slow  # 2 spawned processes
@pytest.mark.parametrize('kind', ['full', 'sharded'])
def test_resume_continues_exactly(results, kind):
    straight = results[0]['checkpoint'][kind]['straight']
    resumed = results[0]['checkpoint'][kind]['resumed']
    assert sorted(resumed['losses']) == list(range(h.CKPT_AT, h.CKPT_STEPS))
    for step in resumed['losses']:
        assert resumed['losses'][step] == straight['losses'][step], step
        assert resumed['lrs'][step] == straight['lrs'][step], step
    for r in results:  # rank 1's local losses match too
        ck = r['checkpoint'][kind]
        assert {s: ck['straight']['losses'][s] for s in ck['resumed']['losses']} == \
            ck['resumed']['losses']
    assert_states_close(resumed['final'], straight['final'], atol=0, rtol=0)


@pytest.mark.slow  # 2 spawned processes
def test_full_checkpoint_is_a_plain_mmengine_checkpoint(results):
    import m3i_mm  # noqa: F401  (the allow-list for torch.load(weights_only=True))
    run = results[0]['checkpoint']['full']
    checkpoint = torch.load(run['path'], map_location='cpu', weights_only=True)
    assert {'state_dict', 'optimizer', 'param_schedulers', 'meta'} <= set(checkpoint)
    state_dict = checkpoint['state_dict']
    assert list(state_dict) == list(h.TinyNet().state_dict())  # plain names, model order
    assert all(type(v) is torch.Tensor for v in state_dict.values())  # noqa: E721
    assert_states_close(state_dict, run['straight']['at_save'], atol=0, rtol=0)
    optimizer = checkpoint['optimizer']
    assert set(optimizer['state']) == {n for n, p in h.TinyNet().named_parameters()
                                       if p.requires_grad}
    assert optimizer['state']['stem.weight']['exp_avg'].shape == (h.DIM, h.IN_DIM)
    assert checkpoint['meta']['iter'] == h.CKPT_AT
    assert checkpoint['meta']['fsdp2'] == dict(world_size=2, state_dict_type='full')


@pytest.mark.slow  # 2 spawned processes
def test_sharded_checkpoint_consolidates_to_the_full_one(results, tmp_path):
    from m3i_mm.engine.strategies import consolidate_sharded_checkpoint
    full = torch.load(results[0]['checkpoint']['full']['path'], weights_only=True)
    sharded_dir = results[0]['checkpoint']['sharded']['path']
    assert osp.isdir(sharded_dir)
    assert not [n for n in os.listdir(osp.dirname(sharded_dir)) if '.tmp-' in n]
    out = str(tmp_path / 'consolidated.pth')
    consolidate_sharded_checkpoint(sharded_dir, out)
    consolidated = torch.load(out, weights_only=True)
    # Both runs trained identically; only the storage differs.
    assert_states_close(consolidated['state_dict'], full['state_dict'], atol=0, rtol=0)
    for name, state in full['optimizer']['state'].items():
        for key, value in state.items():
            torch.testing.assert_close(consolidated['optimizer']['state'][name][key], value,
                                       atol=0, rtol=0)
    assert consolidated['param_schedulers'] == full['param_schedulers']


def test_bad_arguments_are_named():
    from m3i_mm.engine.strategies import FSDP2Strategy
    with pytest.raises(ValueError, match=r"mixed_precision.param_dtype='bf17'"):
        FSDP2Strategy(mixed_precision=dict(param_dtype='bf17'))
    with pytest.raises(ValueError, match=r"unknown mixed_precision keys \['dtype'\]"):
        FSDP2Strategy(mixed_precision=dict(dtype='bfloat16'))
    with pytest.raises(ValueError, match="state_dict_type must be 'full' or 'sharded'"):
        FSDP2Strategy(state_dict_type='local')
    with pytest.raises(ValueError, match='is not a function in the FUNCTIONS registry'):
        FSDP2Strategy(shard_modules='InternImageLayer')
    with pytest.raises(ValueError, match='model_wrapper is not used'):
        FSDP2Strategy(model_wrapper=dict(type='MMDistributedDataParallel'))


M3I_CONFIG = osp.join(TEST_CONFIGS, 'm3i_tiny_fsdp2.py')


@pytest.mark.slow  # tools/dist_train.sh, 2 processes
def test_m3i_trains_through_flexible_runner_and_dist_train(tmp_path):
    from m3i_mm.demo.photo_datasets import write_m3i_demo_sources
    write_m3i_demo_sources(str(tmp_path / 'data' / 'demo' / 'm3i'), size=64)
    res = run_tool(['tools/dist_train.sh', M3I_CONFIG, '2', '--work-dir', 'w'],
                   cwd=str(tmp_path), env=dict(PORT=str(free_port())))
    output = res.stdout + res.stderr
    assert res.returncode == 0, output[-4000:]
    finished = re.findall(r'\[m3i_mm\] rank (\d)/2 finished training at iter 3', output)
    assert sorted(finished) == ['0', '1'], output[-4000:]
    assert "FSDP2: averaged models ['target_encoder']" in output
    assert re.search(r'FSDP2: \d+ shard units over 2 ranks \(cpu mesh\): root M3I, '
                     r'InternImage x1, InternImageLayer x5', output), output[-4000:]
    assert re.search(r'Iter\(train\) \[3/3\].*loss: \d', output)
    assert [osp.basename(p) for p in glob.glob(str(tmp_path / 'w' / '*.pth'))] == \
        ['iter_3.pth']

    import m3i_mm  # noqa: F401
    checkpoint = torch.load(str(tmp_path / 'w' / 'iter_3.pth'), weights_only=True)
    state_dict = checkpoint['state_dict']
    assert not any('fsdp' in k.lower() or k.startswith('module.') for k in state_dict)
    # The EMA target encoder was gathered whole, under the names of an unsharded M3I.
    backbone = {k[len('backbone.'):]: v for k, v in state_dict.items()
                if k.startswith('backbone.')}
    for key, value in backbone.items():
        ema = state_dict['target_encoder.module.0.' + key]
        assert type(ema) is torch.Tensor and ema.shape == value.shape  # noqa: E721
    assert int(state_dict['target_encoder.steps']) == 3
    assert not any(isinstance(v, DTensor) for v in state_dict.values())


@pytest.mark.slow  # tools/dist_train.sh, 2 processes
def test_sharded_checkpoints_through_the_checkpoint_hook(tmp_path):
    """m3i_mm.CheckpointHook commits FSDP2's sharded directories like files: renamed into
    place, last_checkpoint after, the replaced directories deleted after that."""
    from m3i_mm.demo.photo_datasets import write_m3i_demo_sources
    write_m3i_demo_sources(str(tmp_path / 'data' / 'demo' / 'm3i'), size=64)
    res = run_tool(['tools/dist_train.sh', M3I_CONFIG, '2', '--work-dir', 'w', '--cfg-options',
                    'strategy.state_dict_type=sharded', 'default_hooks.checkpoint.interval=1',
                    'default_hooks.checkpoint.max_keep_ckpts=1'],
                   cwd=str(tmp_path), env=dict(PORT=str(free_port())))
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    work_dir = tmp_path / 'w'
    entries = sorted(n for n in os.listdir(work_dir) if 'iter_' in n or n == 'last_checkpoint')
    assert entries == ['iter_3.pth', 'last_checkpoint']
    assert osp.isfile(work_dir / 'iter_3.pth' / 'meta.pth')
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'iter_3.pth')
