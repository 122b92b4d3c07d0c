"""``GET /t.js``: the snippet, minified, with caching headers.

The source is ``static/t.js``. The server writes the configured collect and
site settings paths into it (:func:`with_paths`), then it is minified with
rjsmin and gzipped once per process and set of paths, on the first request
(nothing happens at import), and kept in memory with a strong ``ETag`` (a
hash of the minified bytes, so each set of paths has its own).

The paths are written as references relative to the snippet's own folder
(``collector/inbound/paths.py``): the source builds each URL from ``O``, the folder
it was loaded from, and a string literal, ``O + 'collect'`` and
``O + 'sites/' + site + '/settings.json'``; :data:`PATH_SLOTS` names those
literals and each is replaced by the configured path's. With the default
paths nothing changes, so the bytes served are the source's own. A source
in which a slot is not found exactly once is not served: the build raises.

Why ``Cache-Control: public, max-age=300`` and not a year: the URL is fixed
in the tag on every page of every site (``<script src=".../t.js">``, or the
renamed path), so it cannot carry a version. A long lifetime would leave
visitors on an old snippet for as long as it lasts after we ship a fix.
Five minutes bounds that; after it, browsers revalidate with
``If-None-Match`` and get a ``304`` without a body as long as the file did
not change.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import rjsmin
from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState

from collector.config import defaults
from collector.inbound.paths import CollectorPaths, configured_paths, relative_reference

bp = Blueprint("snippet", __name__)

SNIPPET_NAME = "t.js"
CACHE_CONTROL = "public, max-age=300"
CONTENT_TYPE = "application/javascript; charset=utf-8"

# <repo>/static/t.js, next to <repo>/collector/
_REPO_SOURCE = Path(__file__).resolve().parents[2] / "static" / SNIPPET_NAME
# The string literals of static/t.js that hold a path relative to the snippet's folder.
COLLECT_SLOT = "'collect'"
SITE_SETTINGS_SLOT = "'sites/' + site + '/settings.json'"
PATH_SLOTS = (COLLECT_SLOT, SITE_SETTINGS_SLOT)


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


def path_literals(paths: CollectorPaths) -> dict[str, str]:
    """Each slot of the source, and the JavaScript that builds the configured path in its place.

    The paths hold no quote nor backslash (``paths.path_problem``), so a
    single-quoted literal needs no escaping.
    """
    collect = relative_reference(paths.snippet, paths.collect)
    head, _, tail = relative_reference(paths.snippet, paths.site_settings).partition(defaults.SITE_PLACEHOLDER)
    return {COLLECT_SLOT: f"'{collect}'", SITE_SETTINGS_SLOT: f"'{head}' + site + '{tail}'"}


def with_paths(source: str, paths: CollectorPaths) -> str:
    """``source`` with the configured paths written into its slots."""
    for slot, literal in path_literals(paths).items():
        if source.count(slot) != 1:
            raise RuntimeError(f"static/{SNIPPET_NAME} must hold {slot} exactly once: the collector writes the configured path there")
        source = source.replace(slot, literal)
    return source


def current_snippet(paths: CollectorPaths | None = None) -> Snippet:
    """The snippet for ``paths`` (the defaults when None), built on first use in this process."""
    return _built_for(paths or CollectorPaths())


@lru_cache(maxsize=8)
def _built_for(paths: CollectorPaths) -> Snippet:
    return build_snippet(with_paths(snippet_source(), paths))


def snippet() -> Response:
    built = current_snippet(configured_paths(current_app))
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


def _add_route(state: BlueprintSetupState) -> None:
    """The snippet at the path the configuration names (``[collector.paths] snippet``), and at no other."""
    state.add_url_rule(configured_paths(state.app).snippet, "snippet", snippet, methods=["GET"])


bp.record(_add_route)
