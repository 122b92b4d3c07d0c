"""Browser-only fixtures: headless Chromium and a recording collector.

The recording collector is a small Flask app on 127.0.0.1 that serves the
snippet through the real ``collector.inbound.snippet`` blueprint, answers the
site settings, serves test pages, and records every request to ``/collect``
(and any CORS preflight, which the snippet must never cause). A test can
script its next answers (``fail_next(2, 503, retry_after="1")``) and its
site settings. It proves the snippet's own behaviour without Redis or
vendors; the end-to-end tests use the real stack from ``tests/conftest.py``.

``dev_demo`` runs the real ``collector dev`` (embedded Redis, worker, demo
destinations) for the demo page's end-to-end test.

Chromium is Debian's ``/usr/bin/chromium``; without it the browser tests
are skipped with that reason.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, request
from werkzeug.serving import make_server

from collector.inbound import snippet
from collector.inbound.collect import grant_cors
from tests.chromium import STUB, chromium_from
from tests.conftest import running_collector_dev

SITE = "test_site"
REPO = Path(__file__).resolve().parents[2]
DEMO_PAGE = REPO / "collector" / "demo" / "page.html"
WAIT_SECONDS = 10.0


@dataclass
class Recorded:
    """One request that reached the recording collector."""

    method: str
    path: str
    headers: dict[str, str]
    body: str
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.json["events"] if self.method == "POST" else []


@dataclass
class Recorder:
    """What the recording collector received, and what it will answer next."""

    requests: list[Recorded] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    settings_status: int = 200
    settings_requests: int = 0
    pages: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    script_delay: float = 0.0
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    _answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._answers.clear()
            self.settings = {"require_consent": False, "honor_gpc": False}
            self.settings_status = 200
            self.settings_requests = 0
            self.pages.clear()
            self.script_delay = 0.0
            self.deliveries = []

    # scripting -----------------------------------------------------------

    def fail_next(self, times: int, status: int = 503, retry_after: str | None = None) -> None:
        """Answer the next ``times`` POSTs to /collect with ``status``."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            self._answers.extend([(status, headers)] * times)

    def add_page(self, name: str, html: str, headers: dict[str, str] | None = None) -> str:
        """Serve ``html`` at ``/p/<name>``; returns its URL."""
        self.pages[name] = (html, headers or {})
        return f"{self.base_url}/p/{name}"

    # reading -------------------------------------------------------------

    def posts(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    def preflights(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == "OPTIONS"]

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        """Every event received, in arrival order (resends included)."""
        return [e for r in self.posts() for e in r.events if type_ is None or e["type"] == type_]

    def unique_events(self, type_: str | None = None) -> list[dict[str, Any]]:
        """Every event received once per id, as the collector's dedupe would keep them."""
        seen: dict[str, dict[str, Any]] = {}
        for event in self.events(type_):
            seen.setdefault(event["id"], event)
        return list(seen.values())

    def wait_for(self, predicate: Callable[[], Any], timeout: float = WAIT_SECONDS, what: str = "condition") -> Any:
        """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; received {self.events()}")
            time.sleep(0.05)

    def wait_for_events(self, count: int, type_: str | None = None, timeout: float = WAIT_SECONDS) -> list[dict[str, Any]]:
        """Wait until ``count`` distinct events (of ``type_``) arrived; return them."""
        return self.wait_for(
            lambda: (events := self.unique_events(type_)) and len(events) >= count and events,
            timeout,
            f"{count} {type_ or 'any'} event(s)",
        )

    def assert_quiet(self, seconds: float, type_: str | None = None) -> None:
        """Nothing (of ``type_``) arrives during ``seconds``: for what must not be sent."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert not self.events(type_), f"unexpected events: {self.events(type_)}"
            time.sleep(0.05)
        assert not self.events(type_), f"unexpected events: {self.events(type_)}"

    # the app's side --------------------------------------------------------

    def _record(self) -> None:
        entry = Recorded(
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            body=request.get_data(as_text=True),
            at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(entry)

    def _next_answer(self) -> tuple[int, dict[str, str]]:
        with self._lock:
            return self._answers.pop(0) if self._answers else (202, {})


def allow_site_origin(response: Response) -> Response:
    """The collector's own CORS answer, for whatever origin the test page has."""
    origin = request.headers.get("Origin")
    return grant_cors(response, origin) if origin else response


def recording_app(recorder: Recorder) -> Flask:
    app = Flask(__name__)
    app.register_blueprint(snippet.bp)

    @app.route("/collect", methods=["POST", "OPTIONS"])
    @app.route("/slow/collect", methods=["POST", "OPTIONS"])  # the snippet posts next to where it was loaded from
    def collect() -> Response:
        recorder._record()
        if request.method == "OPTIONS":
            return allow_site_origin(Response(status=204))
        status, headers = recorder._next_answer()
        if status != 202:
            body: dict[str, Any] = {"error": {"code": status, "message": "scripted by the test"}}
            return allow_site_origin(Response(json.dumps(body), status=status, headers=headers, mimetype="application/json"))
        body = {"accepted": len(json.loads(request.get_data(as_text=True))["events"]), "duplicates": 0, "rejected": []}
        response = Response(json.dumps(body), status=202, mimetype="application/json")
        response.set_cookie("_cid", "visitor-cookie-1", httponly=True, samesite="Lax")
        return allow_site_origin(response)

    @app.get("/sites/<site>/settings.json")
    @app.get("/slow/sites/<site>/settings.json")
    def site_settings(site: str) -> Response:
        recorder.settings_requests += 1
        if recorder.settings_status != 200:
            return allow_site_origin(Response('{"error": {}}', status=recorder.settings_status, mimetype="application/json"))
        return allow_site_origin(Response(json.dumps(recorder.settings), mimetype="application/json"))

    @app.get("/slow/t.js")
    def slow_snippet() -> Response:
        """The snippet after ``script_delay`` seconds: pages run their stub calls first."""
        time.sleep(recorder.script_delay)
        return Response(snippet.current_snippet().minified, content_type=snippet.CONTENT_TYPE)

    @app.get("/demo")
    def demo_page() -> Response:
        """The demo page of ``collector dev``, as shipped."""
        return Response(DEMO_PAGE.read_bytes(), mimetype="text/html")

    @app.get("/_demo/deliveries")
    def demo_deliveries() -> Response:
        return Response(json.dumps({"deliveries": recorder.deliveries}), mimetype="application/json")

    @app.get("/p/<name>")
    def test_page(name: str) -> Response:
        html, headers = recorder.pages[name]
        return Response(html, mimetype="text/html", headers={"Cache-Control": "no-store", **headers})

    return app


@pytest.fixture(scope="session")
def recorder_server() -> Iterator[Recorder]:
    recorder = Recorder()
    recorder.reset()
    server = make_server("127.0.0.1", 0, recording_app(recorder), threaded=True)
    recorder.base_url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()


@pytest.fixture
def recorder(recorder_server: Recorder) -> Recorder:
    """The recording collector, emptied, answering 202 and default settings."""
    recorder_server.reset()
    return recorder_server


@pytest.fixture(scope="session")
def chromium(playwright_driver: Any) -> Iterator[Any]:
    """Headless Debian Chromium, one for the session."""
    with chromium_from(playwright_driver) as browser:
        yield browser


class Tab:
    """A page in a fresh browser context, with what went wrong on it collected."""

    def __init__(self, context: Any):
        self.context = context
        self.page = context.new_page()
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))

    def goto(self, url: str) -> None:
        self.page.goto(url, wait_until="load")
        self.wait_loaded()

    def wait_loaded(self) -> None:
        """Wait until the snippet has replaced the stub."""
        self.page.wait_for_function("window.collector && 'errors' in window.collector", timeout=WAIT_SECONDS * 1000)

    def call(self, *args: Any) -> None:
        """``collector(*args)`` in the page."""
        self.page.evaluate("args => window.collector(...args)", list(args))

    def errors(self) -> int:
        return self.page.evaluate("window.collector.errors")

    def storage(self) -> dict[str, str]:
        return self.page.evaluate("Object.fromEntries(Object.entries(localStorage))")


@pytest.fixture
def tab(chromium: Any) -> Iterator[Tab]:
    """A fresh context (empty storage, no cookies) and a page in it."""
    context = chromium.new_context(viewport={"width": 1000, "height": 700})
    try:
        yield Tab(context)
    finally:
        context.close()


def page_html(
    *,
    site: str = SITE,
    src: str = "/t.js",
    head: str = "",
    body: str = "",
    before: str = "",
    nonce: str | None = None,
    copies: int = 1,
) -> str:
    """A test page that installs the snippet as the contract says.

    ``before`` runs right after the stub, before the snippet can have loaded.
    """
    n = f' nonce="{nonce}"' if nonce else ""
    tag = f'<script async src="{src}" data-site="{site}"{n}></script>'
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>test</title><link rel=icon href='data:,'>"
        f"{head}{tag * copies}<script{n}>{STUB};{before}</script></head>"
        f"<body>{body}</body></html>"
    )


@pytest.fixture
def page_factory(recorder: Recorder) -> Callable[..., str]:
    """Register a test page built by ``page_html``; returns its URL."""
    counter = iter(range(1_000_000))

    def make(name: str | None = None, headers: dict[str, str] | None = None, **kwargs: Any) -> str:
        return recorder.add_page(name or f"page{next(counter)}", page_html(**kwargs), headers)

    return make


@pytest.fixture(scope="session")
def dev_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``collector dev`` with no config, as a newcomer runs it; yields its URL."""
    with running_collector_dev(tmp_path_factory.mktemp("dev") / "collector-dev.log") as dev:
        yield dev.url
