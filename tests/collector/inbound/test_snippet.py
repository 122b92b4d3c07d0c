"""``GET /t.js``: the snippet served minified, gzipped on request, cacheable.

A bare Flask app with only the snippet blueprint, so these tests need
neither Redis nor a site configuration.
"""

from __future__ import annotations

import gzip
import re

import pytest
from flask import Flask

from collector.inbound import snippet

BUDGET_GZIP_BYTES = 2048


@pytest.fixture
def snippet_client():
    app = Flask(__name__)
    app.register_blueprint(snippet.bp)
    return app.test_client()


def test_serves_minified_javascript(snippet_client):
    """/t.js answers 200 with JavaScript, smaller than the readable source."""
    response = snippet_client.get("/t.js")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/javascript; charset=utf-8"
    assert "Content-Encoding" not in response.headers
    source = snippet.snippet_source()
    assert 0 < len(response.data) < len(source.encode())
    assert response.data.startswith(b"(function(")
    assert b"/*" not in response.data  # comments are gone


def test_serves_gzip_when_the_client_accepts_it(snippet_client):
    """With Accept-Encoding: gzip the body is gzip, smaller, and decodes to the same script."""
    plain = snippet_client.get("/t.js")
    zipped = snippet_client.get("/t.js", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert len(zipped.data) < len(plain.data)
    assert gzip.decompress(zipped.data) == plain.data
    for response in (plain, zipped):
        assert "Accept-Encoding" in response.headers["Vary"]


@pytest.mark.parametrize("accept", ["", "identity", "gzip;q=0, identity", "br"])
def test_no_gzip_unless_accepted(snippet_client, accept):
    """Clients that do not accept gzip get the plain script."""
    response = snippet_client.get("/t.js", headers={"Accept-Encoding": accept})
    assert "Content-Encoding" not in response.headers
    assert response.data.startswith(b"(function(")


def test_gzip_stays_within_the_budget(snippet_client):
    """The gzipped snippet is at most 2,048 bytes."""
    response = snippet_client.get("/t.js", headers={"Accept-Encoding": "gzip"})
    assert len(response.data) <= BUDGET_GZIP_BYTES, len(response.data)


@pytest.mark.parametrize("accept", ["", "gzip"])
def test_etag_answers_304_when_unchanged(snippet_client, accept):
    """A strong ETag comes with every answer; If-None-Match with it gets 304 and no body."""
    first = snippet_client.get("/t.js", headers={"Accept-Encoding": accept})
    etag = first.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}(-gz)?"', etag)  # strong: no W/
    again = snippet_client.get("/t.js", headers={"Accept-Encoding": accept, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == etag
    other = snippet_client.get("/t.js", headers={"Accept-Encoding": accept, "If-None-Match": '"something-else"'})
    assert other.status_code == 200


def test_gzip_and_plain_have_different_etags(snippet_client):
    """Each representation has its own strong validator."""
    plain = snippet_client.get("/t.js").headers["ETag"]
    zipped = snippet_client.get("/t.js", headers={"Accept-Encoding": "gzip"}).headers["ETag"]
    assert plain != zipped


def test_cache_control_is_short_and_public(snippet_client):
    """The fixed URL is cached publicly for five minutes, then revalidated."""
    for response in (snippet_client.get("/t.js"), snippet_client.get("/t.js", headers={"Accept-Encoding": "gzip"})):
        assert response.headers["Cache-Control"] == "public, max-age=300"


def test_output_has_no_eval_or_function_constructor(snippet_client):
    """The snippet works under a CSP without 'unsafe-eval': no eval, no new Function, no string timers."""
    body = snippet_client.get("/t.js").data.decode()
    assert not re.search(r"\beval\b", body)
    assert not re.search(r"\bnew Function\b|\bFunction\(", body)
    assert not re.search(r"setTimeout\(['\"]", body)


def test_built_once_per_process(snippet_client, monkeypatch):
    """The source is read and minified on first use only."""
    first = snippet.current_snippet()
    monkeypatch.setattr(snippet, "snippet_source", lambda: pytest.fail("read the source again"))
    assert snippet.current_snippet() is first
    assert snippet_client.get("/t.js").status_code == 200


def test_source_is_found_in_the_checkout():
    """In a checkout, the source is <repo>/static/t.js (the installed package maps it to collector.static)."""
    source = snippet.snippet_source()
    assert "window" in source and "collector" in source
    assert snippet._REPO_SOURCE.exists()


def test_build_snippet_hashes_the_minified_bytes():
    """The ETag changes with the minified bytes and only with them."""
    a = snippet.build_snippet("var a = 1; // one\n")
    b = snippet.build_snippet("var a = 1; /* the same code */\n")
    c = snippet.build_snippet("var a = 2;\n")
    assert a.minified == b.minified and a.etag == b.etag
    assert a.etag != c.etag
    assert gzip.decompress(a.gzipped) == a.minified
