"""Process entry points for the multi-process zoo tests (importable by spawned children)."""
import os
import traceback


def _outcome(call):
    try:
        return ('ok', call())
    except Exception as e:  # reported to the parent, which asserts on it
        return ('error', f'{type(e).__name__}: {e}', traceback.format_exc())


def download_after_barrier(barrier, queue, entry, cache_dir):
    """Wait until every process is ready, then download ``entry`` (concurrently)."""
    from m3i_mm.zoo import download_checkpoint
    barrier.wait()
    queue.put(_outcome(lambda: download_checkpoint(entry, cache_dir=cache_dir, progress=False,
                                                   retries=0)))


def distributed_download(rank, world_size, init_file, queue, entries, cache_dir):
    """A gloo rank downloading each entry in turn, as a training job's ranks would."""
    import torch.distributed as dist

    from m3i_mm.zoo import download_checkpoint
    os.environ['LOCAL_RANK'] = str(rank)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world_size)
    try:
        for entry in entries:
            result = _outcome(lambda: download_checkpoint(entry, cache_dir=cache_dir,
                                                          progress=False, retries=0))
            queue.put((rank, entry.name, result))
    finally:
        dist.destroy_process_group()
