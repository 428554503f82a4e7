"""Errors shared by the library and the command-line layer (a leaf module: no imports)."""

__all__ = ['UsageError']


class UsageError(RuntimeError):
    """Bad input from the user (argument, file, config, environment).

    Its message says what is wrong and what to do; the tools print it as one ``error:``
    line (``m3i_mm.cli.launch.run_cli``) instead of a traceback.
    """
