"""'Did you mean' hints for misspelled names (config keys, registry types, zoo entries)."""
import difflib
from typing import Iterable

__all__ = ['did_you_mean']


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    """``' Did you mean: a, b?'`` with up to three close matches of ``word`` among
    ``candidates`` (best first), or ``''`` when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=3,
                                      cutoff=cutoff)
    return f' Did you mean: {", ".join(close)}?' if close else ''
