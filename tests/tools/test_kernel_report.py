"""tools/analysis/kernel_report.py: the compiled-code guard of the Triton DCNv3 kernels.

``test_triton_kernels_compile_without_spills_for_sm80_and_sm90`` compiles a representative
subset (T-s1 and H-s1 in fp32/bf16, T-s4 in fp16; forward and both backwards) for sm_90 and
sm_80 with no GPU and fails on any spill, more than 128 registers or channel loads narrower
than 64 bits, so no change can bring spills back unseen.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'tools', 'analysis'))
import kernel_report  # noqa: E402

PTX = """
.visible .entry kern(
{
\tld.global.v4.b32 \t{%r1, %r2, %r3, %r4}, [%rd1];
$L__BB0_1:
\t@%p1 ld.global.b64 \t%rd5, [%rd2];
\tld.global.v4.b32 \t{%r5, %r6, %r7, %r8}, [%rd3];
\t@%p2 atom.global.gpu.relaxed.add.v4.f32 \t{%f1, %f2, %f3, %f4}, [%rd4], {%f5, %f6, %f7, %f8};
\t@%p3 bra \t$L__BB0_1;
\tst.global.v2.b32 \t[%rd6], {%r9, %r10};
\tred.global.add.f32 \t[%rd7], %f9;
}
"""


def test_ptx_memory_ops_counts_widths_and_loop_trips():
    static, dynamic = kernel_report.ptx_memory_ops(PTX, loop_trips=9)
    assert static['ld'] == {'4x32': 2, '1x64': 1}
    assert static['st'] == {'2x32': 1}
    assert static['atom'] == {'4x32': 1, '1x32': 1}
    # loads: 16 B once + (8 + 16) B per trip; atomics: 16 B per trip + 4 B once
    assert dynamic == {'ld': 16 + 9 * 24, 'st': 8, 'atom': 9 * 16 + 4}
    assert kernel_report.channel_load_bits(static['ld']) == 128


def test_occupancy_from_registers_and_shared_memory():
    # 64 regs x 128 threads: 16 warps-worth of 2048 regs -> 8 blocks -> 32 of 64 warps
    assert kernel_report.occupancy(64, 128, 0, 90) == 0.5
    assert kernel_report.occupancy(32, 128, 0, 90) == 1.0
    assert kernel_report.occupancy(255, 128, 0, 90) == 0.125  # the old kernels' regime
    # shared memory can be the limit: 100 KB per block -> 2 blocks on sm_90
    assert kernel_report.occupancy(32, 128, 100 * 1024, 90) == 2 * 4 / 64


def test_design_rules_flag_spills_registers_and_scalar_loads():
    base = dict(source='triton', kernel='forward', shape='T-s1', groups_x_channels='4 x 16',
                dtype='fp32', arch=90, block_q=64, num_warps=4, registers=100, stack_bytes=0,
                local_bytes=0, spill_instructions=0, shared_bytes=0, occupancy=0.5,
                channel_load_bits=128)
    assert kernel_report.check([kernel_report.KernelResult(**base)]) == []
    bad = [kernel_report.KernelResult(**{**base, **change}) for change in (
        dict(stack_bytes=600), dict(spill_instructions=4), dict(registers=129),
        dict(channel_load_bits=32))]
    problems = kernel_report.check(bad)
    assert len(problems) == 4
    assert 'spills' in problems[0] and '129 registers' in problems[2] and '32-bit' in problems[3]


def test_triton_kernels_compile_without_spills_for_sm80_and_sm90(tmp_path):
    """The spill guard: compiles for sm_90 and sm_80 (H100/H200, A100) without a GPU (about
    40 s on 2 cores, seconds when Triton's cache has the kernels)."""
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    out = tmp_path / 'report.json'
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, 'tools', 'analysis', 'kernel_report.py'),
         '--subset', 'guard', '--arch', '80', '90', '--no-cuda', '--json', str(out),
         '--check'],
        env=env, capture_output=True, text=True, timeout=300)
    assert out.exists(), done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report['errors'] == [], report['errors']
    results = report['results']
    assert len(results) == 2 * len(kernel_report.GUARD_SUBSET) * len(kernel_report.KERNELS)
    for r in results:
        where = f"{r['kernel']} {r['shape']} {r['dtype']} sm_{r['arch']}"
        assert r['stack_bytes'] == 0 and r['spill_instructions'] == 0, where
        assert 0 < r['registers'] <= kernel_report.MAX_REGISTERS, where
        assert r['channel_load_bits'] >= 64, where
        # a point's geometry lives in the threads of its pixel row: one thread at
        # BLOCK_Q = 32 x warps, two at 16 x warps (never one per channel)
        assert r['geometry_copies'] == 32 * r['num_warps'] // r['block_q'], where
        if r['kernel'] == 'backward':
            assert r['atomics'], f'{where}: no atomics for the input gradient'
            if r['arch'] == 90:  # Hopper's vector float32 atomics
                assert '4x32' in r['atomics'], f'{where}: scalar atomics on sm_90'
    assert report['problems'] == []
    assert done.returncode == 0, done.stdout[-2000:]
    assert '| triton | forward | T-s1 | 4 x 16 | fp32 |' in done.stdout


def test_interpreter_mode_is_refused_with_a_reason():
    env = dict(os.environ, TRITON_INTERPRET='1')
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, 'tools', 'analysis', 'kernel_report.py'),
         '--subset', 'guard', '--no-cuda'], env=env, capture_output=True, text=True,
        timeout=120)
    assert done.returncode != 0 and 'unset TRITON_INTERPRET' in done.stderr


@pytest.mark.skipif(kernel_report._nvcc() is None,
                    reason='needs nvcc (a CUDA toolkit) to compile the CUDA extension')
@pytest.mark.slow
def test_cuda_extension_is_in_the_report(tmp_path):
    """nvcc -cubin of csrc/dcnv3_cuda.cu for sm_90 (a minute or two once; cached after)."""
    results, summary = kernel_report.report_cuda(90, str(tmp_path))
    assert {r.kernel for r in results} == {'dcnv3_forward_kernel', 'dcnv3_backward_kernel'}
    assert {'fp32', 'bf16', 'fp16'} <= {r.dtype for r in results}
    assert all(r.registers > 0 and r.loads for r in results)
    assert 'kernel instantiations' in summary
    assert (tmp_path / 'cuda_extension_sm90.cubin').exists()
