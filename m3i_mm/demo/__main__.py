"""``python -m m3i_mm.demo``: the `make demo` pipeline (:mod:`m3i_mm.demo.pipeline`)."""
from m3i_mm.demo.pipeline import run

run()
