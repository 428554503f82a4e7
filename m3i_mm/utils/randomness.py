"""Keyed random streams: functions of saved state, for bit-exact resume.

:func:`derive_key` hashes a sequence of integers (seed, source, position, ...) into a
64-bit key (splitmix64 finaliser); the samplers' shuffles and the seeds below use it.

Training draws from the global generators of python (``random``), numpy
(``np.random``) and torch (CPU and CUDA). Instead of saving and restoring their states,
m3i_mm makes each draw a function of values that checkpoints already hold:

- the model's draws (masks, mixing, drop path): every generator is re-seeded before each
  training iteration from ``(seed, iteration)`` (:func:`seed_all`, by
  ``m3i_mm.IterationSeedHook``);
- the data pipeline's draws (crops, flips, colour): each sample is transformed under
  generators seeded from the key of its draw in the sampler's stream
  (:func:`isolated_random_state`), whichever process or worker transforms it.
"""
import contextlib
import random
from typing import Iterator

import numpy as np
import torch

__all__ = ['derive_key', 'extend_keys', 'isolated_random_state', 'mix64', 'mix64_int',
           'seed_all']

_MASK32 = 0xFFFFFFFF
_MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, a strong 64-bit mixing bijection (vectorised)."""
    x = np.asarray(x, dtype=np.uint64)
    x = (x ^ (x >> _S30)) * _MIX1
    x = (x ^ (x >> _S27)) * _MIX2
    return x ^ (x >> _S31)


def mix64_int(x: int) -> int:
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_key(*parts: int) -> int:
    """A 64-bit key from a sequence of ints (seed, source, pass, ...; taken mod 2**64)."""
    key = 0x6A09E667F3BCC909
    for part in parts:
        key = mix64_int(key ^ (mix64_int(int(part) + GOLDEN) + GOLDEN))
    return key


def extend_keys(key: int, parts: np.ndarray) -> np.ndarray:
    """``derive_key(*prefix, part)`` for every ``part`` of an array, given
    ``key = derive_key(*prefix)`` (vectorised; ``uint64`` array of the parts' shape)."""
    parts = np.asarray(parts).astype(np.uint64)  # negative ints wrap mod 2**64, as in derive_key
    golden = np.uint64(GOLDEN)
    return mix64(np.uint64(key) ^ (mix64(parts + golden) + golden))


def _seed_cpu_generators(key: int) -> None:
    key &= _MASK64
    random.seed(key)
    np.random.seed([key & _MASK32, key >> 32])  # the whole 64-bit key
    torch.default_generator.manual_seed(key)


def seed_all(key: int) -> None:
    """Seed python, numpy, torch CPU and every CUDA device from a 64-bit ``key``."""
    _seed_cpu_generators(key)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(key & _MASK64)


@contextlib.contextmanager
def isolated_random_state(key: int) -> Iterator[None]:
    """Run a block with python, numpy and torch CPU generators seeded from ``key``; restore
    their previous states afterwards (CUDA generators are not touched).

    The block's draws are then a pure function of ``key``, and the caller's streams are
    unchanged, so a data pipeline running in the training process itself
    (``num_workers=0``) does not shift the model's random draws.
    """
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    _seed_cpu_generators(key)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
