"""The command-line layer of ``tools/``: argument parsing, launcher set-up, resume checks.

It sits above the library and imports down only (engine, zoo, utils); nothing in the
library imports it.
"""
