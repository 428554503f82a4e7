"""The command-line layer of ``tools/``: argument parsing, launcher set-up, resume checks,
building backbones and drawing figures for the analysis tools.

It sits above the library and imports down only (engine, zoo, models, analysis, utils);
nothing in the library imports it.
"""
