"""The benchmark suite: ``python -m tests.bench [--quick] [--only ingest,delivery,e2e,footprint,snippet,redis,cost]``.

Not tests: nothing here is collected by pytest (no ``test_*.py``), nothing
asserts. See ``__main__.py`` for what is measured; each stage's module says
how and why. ``python -m tests.bench.profile`` profiles the hot paths;
``python -m tests.bench.ingest_profile`` splits a ``/collect`` request's time by part, against the floor's.
"""
