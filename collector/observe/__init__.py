"""Observing the path: what an operator and a site owner see of it.

``metrics.py`` (``/metrics``), ``health.py`` (``/healthz``, ``/readyz``),
``logs.py`` (the log formats), ``live_tail.py`` (the last batches and
refusals), ``masking.py`` (personal data kept out of what is shown) and the
site owner's ``console/``. Every room may report here (a counter, a live-tail
line); this room reads the others' figures, and the console's replay
button calls ``worker/replay.py``.
"""
