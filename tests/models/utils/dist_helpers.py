"""Run a function in 2 CPU processes with a gloo process group (torch.multiprocessing spawn)."""
import os
import sys
import traceback
from typing import Callable, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.conftest import free_port

WORLD_SIZE = 2


def _entry(rank: int, fn: Callable, port: int, args: Tuple) -> None:
    os.environ['MASTER_ADDR'] = '127.0.0.1'
    os.environ['MASTER_PORT'] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=WORLD_SIZE)
    try:
        fn(rank, WORLD_SIZE, *args)
        dist.barrier()
    except BaseException:
        # The other rank usually dies of a broken connection; print the root cause here.
        print(f'[rank {rank}] {traceback.format_exc()}', file=sys.stderr, flush=True)
        raise
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable, *args) -> None:
    """Call ``fn(rank, world_size, *args)`` on 2 ranks; a failure in any rank raises here.

    ``fn`` must be a module-level function (it is pickled by name for the spawned workers).
    """
    mp.spawn(_entry, args=(fn, free_port(), args), nprocs=WORLD_SIZE, join=True)
