"""Fixtures of the drop-in source tests: the vendors' browser clients, fetched once per checkout.

``.ci/run`` fetches them before the tests; a plain ``python -m pytest`` on a
fresh clone fetches them here. A client that cannot be had fails the tests
that need it, loudly: it is never a reason to skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sources import js_clients


@pytest.fixture(scope="session")
def js_clients_folder() -> Path:
    """The folder holding every pinned client (``tests/fixtures/js_clients``), fetched if missing."""
    if js_clients.missing():
        try:
            js_clients.fetch()
        except Exception as error:  # noqa: BLE001 - any failure is reported as the reason
            pytest.fail(f"cannot fetch the JavaScript clients into {js_clients.FOLDER} ({error!r}); run `python3 -m tests.sources.js_clients`")
    absent = js_clients.missing()
    if absent:
        pytest.fail(f"JavaScript clients missing in {js_clients.FOLDER}: {[f'{c.package}@{c.version}' for c in absent]}")
    return js_clients.FOLDER
