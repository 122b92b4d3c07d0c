"""A real Chromium page against `collector serve` with renamed paths, on a site that drops bots (the default).

The shop is ``https://shop.example``; its pages load the snippet from a path
of the shop's own host, ``/_c/assets/js/app.js``, and Playwright passes
every ``/_c/...`` request to the collector with the prefix stripped, as
``deploy/nginx/collector.conf``'s ``location /_c/`` does. The page's tag
names only the renamed snippet: the snippet must learn the renamed collect
and settings paths from the server and resolve them under ``/_c/``.

The same stack shows the bot rule from a browser: a headless Chromium that
says ``HeadlessChrome`` (its own User-Agent, which the tests' browser
otherwise replaces, see ``tests/chromium.py``) is answered 202, and
nothing of it is queued.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from collector.mapping.commerce import web_event_id
from tests.browser.conftest import Tab, page_html
from tests.chromium import pump_until
from tests.stack import ORIGIN, SITE, ServeStack
from tests.stack import config_toml as stack_config_toml

PREFIX = "/_c"
PATHS = '[collector.paths]\nsnippet = "/assets/js/app.js"\ncollect = "/e"\nsite_settings = "/assets/cfg-{site}.json"\n'
HEADLESS = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.6778.33 Safari/537.36"
WAIT_SECONDS = 30
SITE_KEEPS_BOTS = f'[sites.{SITE}]\norigins = ["{ORIGIN}"]\nbots = "keep"\n'


def renamed_config(depict_url: str, commerce_url: str) -> str:
    """The tests' sites with renamed paths, and the test site back on the default bots = "drop"."""
    text = stack_config_toml(depict_url, commerce_url)
    assert SITE_KEEPS_BOTS in text and "[collector]\n" in text
    text = text.replace(SITE_KEEPS_BOTS, f'[sites.{SITE}]\norigins = ["{ORIGIN}"]\n')
    return text + "\n" + PATHS


@pytest.fixture(scope="module")
def stack(chromium: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeStack]:
    """`collector serve` + worker with the renamed paths (Chromium first, so a missing browser skips before starting anything)."""
    with ServeStack(tmp_path_factory.mktemp("renamed-paths"), make_config=renamed_config) as deployment:
        yield deployment


class ShopHost:
    """The shop's host in the browser: its pages from memory, ``/_c/...`` passed to the collector; the paths asked for and the answers."""

    def __init__(self, context: Any, collector_url: str):
        self.collector_url = collector_url
        self.pages: dict[str, str] = {}
        self.requested: list[tuple[str, str]] = []
        self.answers: list[tuple[int, Any]] = []
        context.route(f"{ORIGIN}/**", self._handle)

    def _handle(self, route: Any) -> None:
        path = route.request.url[len(ORIGIN) :]
        if path in self.pages:
            route.fulfill(status=200, content_type="text/html", body=self.pages[path])
            return
        if not path.startswith(PREFIX + "/"):
            route.fulfill(status=404, body="not the shop's")
            return
        self.requested.append((route.request.method, path))
        response = route.fetch(url=self.collector_url + path[len(PREFIX) :])
        if route.request.method == "POST":
            self.answers.append((response.status, response.json()))
        route.fulfill(response=response)

    def page(self, path: str) -> str:
        self.pages[path] = page_html(site=SITE, src=f"{PREFIX}/assets/js/app.js")
        return ORIGIN + path


def visit(chromium: Any, stack: ServeStack, **context_options: Any) -> tuple[Tab, ShopHost]:
    context = chromium.new_context(viewport={"width": 1000, "height": 700}, **context_options)
    host = ShopHost(context, stack.url)
    tab = Tab(context)
    tab.goto(host.page("/p/keyboard"))
    tab.call("track", "add_to_cart", {"product_id": "KEY-1", "entity_price": "100", "currency": "USD"})
    tab.call("flush")
    pump_until(tab.page, lambda: host.answers, "the collector's answer", WAIT_SECONDS)
    return tab, host


def test_a_tag_naming_the_renamed_snippet_delivers_an_event_end_to_end(chromium, stack):
    """The snippet, its settings and its events all go through the renamed paths under /_c/; Depict and Commerce get the event."""
    tab, host = visit(chromium, stack)
    try:
        pump_until(tab.page, lambda: any(body.get("accepted") for _, body in host.answers), "an accepted batch", WAIT_SECONDS)
        methods_and_paths = set(host.requested)
        assert ("GET", "/_c/assets/js/app.js") in methods_and_paths
        assert ("GET", f"/_c/assets/cfg-{SITE}.json") in methods_and_paths
        assert {path for method, path in host.requested if method == "POST"} == {"/_c/e"}
        assert all(status == 202 for status, _ in host.answers), host.answers

        def carts() -> list[dict[str, Any]]:
            return [e for request in stack.depict.accepted for e in request.json if e.get("type") == "add_to_cart"]

        [cart] = pump_until(tab.page, carts, "Depict to receive the add_to_cart", WAIT_SECONDS)
        assert cart["product_id"] == "KEY-1" and cart["url"] == f"{ORIGIN}/p/keyboard"
        wanted = web_event_id(SITE, cart["deduplication_id"])
        pump_until(tab.page, lambda: wanted in stack.commerce.event_ids(), "Commerce to receive the add_to_cart", WAIT_SECONDS)
        assert tab.errors() == 0 and not tab.page_errors
    finally:
        tab.context.unroute_all(behavior="ignoreErrors")
        tab.context.close()


def test_the_default_paths_answer_404(stack):
    with httpx.Client(base_url=stack.url, timeout=10, headers={"Origin": ORIGIN}) as client:
        assert client.get("/t.js").status_code == 404
        assert client.get(f"/sites/{SITE}/settings.json").status_code == 404
        assert client.post("/collect", content=b'{"site": "test_store", "events": []}').status_code == 404
        assert client.get("/assets/js/app.js").status_code == 200


def test_a_headless_browsers_events_are_answered_and_dropped(chromium, stack):
    """HeadlessChrome is a bot by the list: 202, nothing accepted, counted as dropped_as_bot."""
    tab, host = visit(chromium, stack, user_agent=HEADLESS)
    try:
        assert tab.page.evaluate("navigator.userAgent") == HEADLESS
        dropped = lambda: sum(body.get("dropped_as_bot", 0) for _, body in host.answers)  # noqa: E731
        pump_until(tab.page, lambda: dropped() >= 2, "the page view and the add_to_cart to be answered", WAIT_SECONDS)
        assert all(status == 202 for status, _ in host.answers), host.answers
        assert sum(body.get("accepted", 0) for _, body in host.answers) == 0
    finally:
        tab.context.unroute_all(behavior="ignoreErrors")
        tab.context.close()
    scraped = httpx.get(f"{stack.url}/metrics", timeout=10).text
    counted = re.search(rf'collector_events_total{{outcome="dropped_as_bot",site="{SITE}"}} ([0-9.]+)', scraped)
    assert counted and float(counted.group(1)) >= 2, scraped
