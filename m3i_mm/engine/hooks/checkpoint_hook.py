"""mmengine's ``CheckpointHook`` with checkpoints that a crash at any moment cannot lose."""
import contextlib
import errno
import inspect
import os
import os.path as osp
import shutil
from typing import Iterator, List, Optional

from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook as MMEngineCheckpointHook
from mmengine.logging import print_log

from m3i_mm.registry import HOOKS
from m3i_mm.utils.errors import UsageError
from m3i_mm.utils.suggest import did_you_mean
from m3i_mm.utils.io import (STORAGE_WRITE_ERRNOS, atomic_write_text, commit_path,
                             remove_stale_temporaries, temporary_path)

__all__ = ['CheckpointHook', 'CheckpointSaveError']

#: Message-hub key of the checkpoints a save replaced but had not deleted yet.
PENDING_REMOVALS = 'm3i_mm_pending_checkpoint_removals'
LAST_CHECKPOINT_FILE = 'last_checkpoint'


#: What this hook passes to ``runner.save_checkpoint`` itself (not from its ``**kwargs``).
_PASSED_TO_SAVE = {'self', 'out_dir', 'filename', 'file_client_args', 'save_optimizer',
                   'save_param_scheduler', 'meta', 'by_epoch', 'backend_args'}


class CheckpointSaveError(UsageError):
    """A checkpoint could not be written (full disk, file size limit, read-only storage);
    the message names the last complete checkpoint, which the failed save left intact."""


class _DeferredRemovals:
    """A file backend whose ``remove``/``rmtree`` are recorded instead of run."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.paths: List[str] = []

    def remove(self, path) -> None:
        self.paths.append(str(path))

    def rmtree(self, path) -> None:
        self.paths.append(str(path))

    def __getattr__(self, name):
        return getattr(self.backend, name)


@HOOKS.register_module()
class CheckpointHook(MMEngineCheckpointHook):
    """``CheckpointHook`` whose work directory always holds a complete, resumable checkpoint.

    Same arguments and behaviour as mmengine's hook (interval, ``max_keep_ckpts``,
    ``save_best``, ...), with the order of every save changed so that a kill (or power
    loss) at any point leaves ``last_checkpoint`` naming a complete file:

    1. the checkpoint is written under a temporary name (``.iter_N.pth.tmp-PID-RANDOM``),
       ``fsync``-ed, renamed to its final name and its directory ``fsync``-ed
       (:mod:`m3i_mm.utils.io`); this also holds for :class:`~m3i_mm.FSDP2Strategy`'s
       sharded checkpoint directories;
    2. only then is ``last_checkpoint`` replaced, atomically, to name it;
    3. only then are the checkpoints that ``max_keep_ckpts`` (or a new best checkpoint)
       drops deleted. Their names are also stored in the new checkpoint's message hub,
       so a run killed before deleting them deletes them when it resumes; temporaries of
       killed writers are deleted then too.

    mmengine's hook deletes the oldest checkpoint *before* writing the new one and writes
    in place, so with ``max_keep_ckpts=1`` a kill during the save can leave no checkpoint.

    ``tools/train.py`` uses this hook in place of mmengine's for every config. Checkpoints
    on remote storage backends (``out_dir='s3://...'``) keep steps 2 and 3 but are written
    in place, as those backends have no rename.
    """

    def before_run(self, runner) -> None:
        """Refuse misspelled arguments at the start (mmengine passes unknown ones on to
        ``runner.save_checkpoint``, which fails only at the first save)."""
        super().before_run(runner)
        if not self.args:
            return
        save = inspect.signature(type(runner).save_checkpoint).parameters
        if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in save.values()):
            return  # a runner that takes anything
        accepted = set(save) - _PASSED_TO_SAVE
        unknown = sorted(set(self.args) - accepted)
        if unknown:
            known = set(inspect.signature(MMEngineCheckpointHook.__init__).parameters)
            known = sorted((known | accepted) - {'self', 'kwargs'})
            raise UsageError(
                f'{type(self).__name__} (default_hooks.checkpoint) got unknown arguments '
                f'{unknown}, which would fail at the first save; its arguments are '
                f'{", ".join(known)}.' + did_you_mean(unknown[0], known))

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not (is_main_process() and self._local()):
            return
        # no writer of this run is active yet: every temporary is stale, whatever its pid
        removed = remove_stale_temporaries(self.out_dir, keep_pid=-1)
        if removed:
            print_log(f'removed {len(removed)} partial checkpoint file(s) of an interrupted '
                      f'save from {self.out_dir}: {", ".join(sorted(removed))}',
                      logger='current')
        pending = runner.message_hub.get_info(PENDING_REMOVALS) or []
        self._remove(pending)

    def _local(self) -> bool:
        backend = self.file_backend
        if isinstance(backend, _DeferredRemovals):
            backend = backend.backend
        return isinstance(backend, LocalBackend)

    def _remove(self, paths: List[str]) -> None:
        """Delete replaced checkpoints (main process; missing ones are fine)."""
        for path in paths:
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # sharded checkpoints are directories
                self.file_backend.rmtree(path)

    def _write(self, runner, filename: str, **save_kwargs) -> None:
        """``runner.save_checkpoint`` to a temporary name, then commit it to ``filename``."""
        save = type(runner).save_checkpoint  # not an instance patch of _atomic_runner_saves
        if not self._local():
            save(runner, self.out_dir, filename, self.file_client_args,
                 backend_args=self.backend_args, **save_kwargs)
            return
        final = osp.join(self.out_dir, filename)
        tmp = [temporary_path(final)]
        broadcast_object_list(tmp)  # ranks that write shards must agree on the name
        try:
            save(runner, self.out_dir, osp.basename(tmp[0]), self.file_client_args,
                 backend_args=self.backend_args, **save_kwargs)
            if is_main_process():
                commit_path(tmp[0], final)
        except BaseException:  # e.g. a full disk: keep the previous checkpoint, drop the rest
            if is_main_process() and osp.lexists(tmp[0]):
                shutil.rmtree(tmp[0]) if osp.isdir(tmp[0]) else os.remove(tmp[0])
            raise

    def _last_complete(self, runner) -> Optional[str]:
        """The checkpoint ``last_checkpoint`` names, if it is there."""
        try:
            with open(osp.join(runner.work_dir, LAST_CHECKPOINT_FILE), encoding='utf-8') as f:
                path = f.read().strip()
        except OSError:
            return None
        return path if path and osp.exists(path) else None

    @contextlib.contextmanager
    def _storage_errors(self, runner, what: str) -> Iterator[None]:
        """Turn a storage failure while saving ``what`` into one clear error naming the
        last complete checkpoint."""
        try:
            yield
        except OSError as e:
            if e.errno not in STORAGE_WRITE_ERRNOS:
                raise
            last = self._last_complete(runner)
            kept = (f'the last complete checkpoint is {last}, which tools/train.py --resume '
                    'takes' if last else 'no checkpoint of this run was complete yet')
            raise CheckpointSaveError(
                f'cannot save {what}: {os.strerror(e.errno)} '
                f'[{errno.errorcode.get(e.errno, e.errno)}]; nothing of it was kept, and '
                f'nothing else is lost: {kept}. Make room (or raise the limit) and resume') \
                from e

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        replaced: List[str] = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                replaced.append(self.file_backend.join_path(
                    self.out_dir, self.filename_tmpl.format(self.keep_ckpt_ids.popleft())))
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.message_hub.update_info(PENDING_REMOVALS, replaced)
        with self._storage_errors(runner, f'the checkpoint {self.last_ckpt}'):
            self._write(runner, filename, save_optimizer=self.save_optimizer,
                        save_param_scheduler=self.save_param_scheduler, meta=meta,
                        by_epoch=self.by_epoch, **self.args)
        if not is_main_process():
            return
        record = osp.join(runner.work_dir, LAST_CHECKPOINT_FILE)
        try:
            atomic_write_text(record, self.last_ckpt)
        except OSError as e:
            if e.errno not in STORAGE_WRITE_ERRNOS:
                raise
            raise CheckpointSaveError(
                f'saved the checkpoint {self.last_ckpt} completely, but cannot record it in '
                f'{record}: {os.strerror(e.errno)}; nothing is lost: the last complete '
                f'checkpoint is {self.last_ckpt} (resume with tools/train.py --resume '
                f'{self.last_ckpt})') from e
        self._remove(replaced)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        # mmengine's logic, with the previous best deleted after the new one is saved.
        with self._deferred_removals() as deferred, self._atomic_runner_saves(runner), \
                self._storage_errors(runner, f'a new best checkpoint in {self.out_dir}'):
            super()._save_best_checkpoint(runner, metrics)
        if is_main_process():
            # a best checkpoint saved again under the same name is not an old one
            current = set(getattr(self, 'best_ckpt_path_dict', {}).values())
            current.add(getattr(self, 'best_ckpt_path', None))
            self._remove([path for path in deferred.paths if path not in current])

    @contextlib.contextmanager
    def _deferred_removals(self) -> Iterator[_DeferredRemovals]:
        backend = self.file_backend
        self.file_backend = deferred = _DeferredRemovals(backend)
        try:
            yield deferred
        finally:
            self.file_backend = backend

    @contextlib.contextmanager
    def _atomic_runner_saves(self, runner) -> Iterator[None]:
        """Route the ``runner.save_checkpoint`` calls of mmengine's code through :meth:`_write`."""

        def save(out_dir, filename, file_client_args=None, **kwargs):
            kwargs.pop('backend_args', None)
            self._write(runner, filename, **kwargs)

        runner.save_checkpoint = save
        try:
            yield
        finally:
            del runner.save_checkpoint
