"""The demo and its data: small datasets written from the photos shipped with
scikit-image and scikit-learn (``photo_datasets``), used by ``make demo``, the tests and
the analysis tools, and the `make demo` pipeline itself (``pipeline``; ``python -m
m3i_mm.demo``). Not imported by the library.
"""
