"""The shop and its collector on one real origin, for browser tests that must not intercept requests.

Playwright's request interception aborts what a page sends while it unloads
(beacons, keepalive fetches), so tests of page leave cannot use it. Here the
shop is one real HTTP server on 127.0.0.1: its test pages at ``/p/<name>``
and, on the same origin (a first-party path, as under ``/_c/`` of a shop's
own host), the real collector app on the live stack's Redis, whose
`collector worker` delivers to the vendor stand-ins. A test can stop that
server (the browser then gets *connection refused*) and start it again on
the same port, so the origin and its localStorage stay.

Every answer says ``Connection: close``: a kept-alive connection would
otherwise still be served by the stopped server's threads.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from collector import create_app
from collector.config.loading import load_config
from tests.browser.conftest import WAIT_SECONDS, page_html
from tests.conftest import ORIGIN, SITE, config_toml

# A desktop Chrome's user agent: headless Chromium's own says HeadlessChrome, which a site that drops bots refuses.
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"


class Shop:
    """Test pages and the collector on one origin, on a port that can be closed and opened again."""

    def __init__(self, tmp: Path, live_stack: Any):
        self.pages: dict[str, str] = {}
        self.posted: list[dict[str, Any]] = []  # the bodies that reached /collect, in order
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.port = self._server.server_port
        self.origin = f"http://127.0.0.1:{self.port}"
        config = tmp / "collector.toml"
        config.write_text(config_toml(live_stack.depict.url, live_stack.commerce.url).replace(ORIGIN, self.origin))
        self._collector = create_app({"COLLECTOR_CONFIG": load_config(config), "REDIS_URL": live_stack.redis_url})
        self._serve()

    def _serve(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ["PATH_INFO"]

        def closing(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            return start_response(status, [*headers, ("Connection", "close")], *rest)

        if path in self.pages:
            closing("200 OK", [("Content-Type", "text/html"), ("Cache-Control", "no-store")])
            return [self.pages[path].encode()]
        if path == "/collect" and environ["REQUEST_METHOD"] == "POST":
            raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            self.posted.append(json.loads(raw))
            environ["wsgi.input"] = io.BytesIO(raw)
        return self._collector(environ, closing)

    def page(self, name: str, body: str = "", tag: str = "") -> str:
        """Serve a page that installs the snippet at ``/p/<name>`` (``tag``: more attributes on its script tag); its URL."""
        html = page_html(site=SITE, body=body)
        self.pages[f"/p/{name}"] = html.replace(f'data-site="{SITE}"', f'data-site="{SITE}" {tag}'.rstrip())
        return f"{self.origin}/p/{name}"

    def stop(self) -> None:
        """Close the listening socket: from now on the browser's connections are refused."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def start_again(self) -> None:
        self._server = make_server("127.0.0.1", self.port, self._wsgi, threaded=True)
        self._serve()

    def event_types(self) -> dict[str, str]:
        """Every event that reached /collect, id -> type."""
        return {event["id"]: event["type"] for body in self.posted for event in body["events"]}


@contextmanager
def running_shop(tmp: Path, live_stack: Any) -> Iterator[Shop]:
    shop = Shop(tmp, live_stack)
    try:
        yield shop
    finally:
        shop.stop()


@contextmanager
def regular_page(chromium: Any, init_script: str = "") -> Iterator[Any]:
    """A page in a fresh context with a desktop user agent; its uncaught errors in ``page.errors``."""
    context = chromium.new_context(user_agent=USER_AGENT, viewport={"width": 1000, "height": 700})
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()


def open_page(page: Any, url: str) -> None:
    """Load ``url`` and wait until the snippet has replaced the stub."""
    page.goto(url, wait_until="load")
    page.wait_for_function("window.collector && 'errors' in window.collector", timeout=WAIT_SECONDS * 1000)
