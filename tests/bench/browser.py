"""Headless Debian Chromium and a page server, for the browser benches (``snippet.py``, ``e2e.py``).

Chromium is ``/usr/bin/chromium`` driven by Playwright for Python with the
same flags as the browser tests (``tests/chromium.py``). Pages are
served by a threaded Werkzeug server on 127.0.0.1 in this process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import make_server

from tests.chromium import STUB


def snippet_tags(src: str, site: str) -> str:
    return f'<script async src="{src}" data-site="{site}"></script><script>{STUB}</script>'


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve a WSGI app on a free 127.0.0.1 port from a thread; yields its base URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
