"""'Did you mean' hints for misspelled names (config keys, registry types, zoo entries)."""
import difflib
from typing import Iterable, List

__all__ = ['close_matches', 'did_you_mean']


def close_matches(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> List[str]:
    """Up to three of ``candidates`` close to ``word``, best first."""
    return difflib.get_close_matches(str(word), [str(c) for c in candidates], n=3,
                                     cutoff=cutoff)


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    """``' Did you mean: a, b?'`` with up to three close matches of ``word`` among
    ``candidates`` (best first), or ``''`` when none is close."""
    close = close_matches(word, candidates, cutoff)
    return f' Did you mean: {", ".join(close)}?' if close else ''
