"""``GET /t.js``: the snippet, minified, with caching headers.

The source is ``static/t.js``. It is minified with rjsmin and gzipped once
per process, on the first request (nothing happens at import), and kept in
memory with a strong ``ETag`` (a hash of the minified bytes).

Why ``Cache-Control: public, max-age=300`` and not a year: the URL is fixed
by the contract (``<script src=".../t.js">`` on every page of every site),
so it cannot carry a version. A long lifetime would leave visitors on an old
snippet for as long as it lasts after we ship a fix. Five minutes bounds
that; after it, browsers revalidate with ``If-None-Match`` and get a
``304`` without a body as long as the file did not change.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import rjsmin
from flask import Blueprint, Response, request

bp = Blueprint("snippet", __name__)

SNIPPET_NAME = "t.js"
CACHE_CONTROL = "public, max-age=300"
CONTENT_TYPE = "application/javascript; charset=utf-8"

# <repo>/static/t.js, next to <repo>/collector/
_REPO_SOURCE = Path(__file__).resolve().parent.parent / "static" / SNIPPET_NAME


@dataclass(frozen=True)
class Snippet:
    """The served bytes of the snippet: minified, gzipped, and their ETag."""

    minified: bytes
    gzipped: bytes
    etag: str


def snippet_source() -> str:
    """The readable source of the snippet.

    Installed, the pyproject maps ``static/`` into the package as
    ``collector.static``; in a checkout it is ``<repo>/static/t.js``.
    """
    try:
        resource = resources.files("collector.static").joinpath(SNIPPET_NAME)
        if resource.is_file():
            return resource.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return _REPO_SOURCE.read_text(encoding="utf-8")


def build_snippet(source: str) -> Snippet:
    """Minify and gzip ``source``; the ETag is a hash of the minified bytes."""
    minified = rjsmin.jsmin(source).strip().encode("utf-8") + b"\n"
    gzipped = gzip.compress(minified, compresslevel=9, mtime=0)
    etag = hashlib.sha256(minified).hexdigest()[:32]
    return Snippet(minified=minified, gzipped=gzipped, etag=etag)


_lock = threading.Lock()
_built: Snippet | None = None


def current_snippet() -> Snippet:
    """The snippet of this process, built on first use."""
    global _built
    if _built is None:
        with _lock:
            if _built is None:
                _built = build_snippet(snippet_source())
    return _built


@bp.get("/t.js")
def snippet() -> Response:
    built = current_snippet()
    gzipped = request.accept_encodings.quality("gzip") > 0
    response = Response(built.gzipped if gzipped else built.minified, content_type=CONTENT_TYPE)
    # one strong validator per representation, as RFC 9110 wants of strong ETags
    response.set_etag(built.etag + "-gz" if gzipped else built.etag)
    response.headers["Cache-Control"] = CACHE_CONTROL
    response.vary.add("Accept-Encoding")
    if gzipped:
        response.headers["Content-Encoding"] = "gzip"
    # answers 304 (and drops the body) when If-None-Match names our ETag
    return response.make_conditional(request)
