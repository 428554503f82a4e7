"""Engine parts of the m3i_mm scope (hooks, optimizer constructors), found lazily through
the registries."""
from .hooks import *  # noqa: F401,F403
from .keyed_stream import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403
from .strategies import *  # noqa
