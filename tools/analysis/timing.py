"""Wall-clock timing shared by the benchmark scripts."""
import statistics
import time
from typing import Callable


def median_ms(step: Callable[[], object], device: str, warmup: int, iters: int) -> float:
    """Median milliseconds of ``step()`` over ``iters`` runs after ``warmup`` runs.

    On CUDA the device is synchronised around every run, so the time covers the kernels.
    """
    import torch
    cuda = device == 'cuda'
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


if __name__ == '__main__':  # a helper module: say what it is instead of printing nothing
    import argparse
    argparse.ArgumentParser(
        prog='timing.py', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='A helper module of benchmark_dcnv3.py, benchmark_model.py, '
        'benchmark_m3i.py and gpu_check.py:'
        ' they import it; it has no command of its own.').print_help()
