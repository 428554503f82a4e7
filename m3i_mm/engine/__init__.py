"""Engine parts of the m3i_mm scope (hooks, ...), found lazily through the registries."""
from .hooks import *  # noqa: F401,F403
