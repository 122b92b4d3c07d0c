"""The vendors' own browser clients, unchanged, against the collector: Segment's and RudderStack's drop-in.

``@segment/analytics-next`` and ``@rudderstack/analytics-js`` (pinned npm
releases, ``js_clients.py``) run in headless Chromium on a shop page served
by a second HTTP server on 127.0.0.1, another origin that the test site lists
in ``origins``. They are pointed at a production-shaped collector
(``ServeStack``: ``collector serve``, ``collector worker``, Redis, and the
Depict and Commerce stand-ins that judge every request by the vendors'
specs). The page calls ``page()``, ``track()`` with Segment's e-commerce
names and ``identify()``, as a shop's tracking code does.

Chromium resolves no host name but 127.0.0.1 (``--host-resolver-rules``),
so nothing could leave the machine; every request the page makes is
recorded, and the tests assert it went to the collector or the page's own
server. CORS is real: nothing is intercepted, so the clients' preflights
reach the collector as they would in production.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.chromium import pump_until as wait_in_page
from tests.conftest import BROWSER_WRITE_KEY, SITE
from tests.sources.js_clients import RUDDERSTACK, SEGMENT, Client
from tests.stack import ServeStack
from tests.stack import config_toml as stack_config_toml

WAIT_SECONDS = 20
# Chromium resolves nothing but 127.0.0.1: a request to any other host fails before it is sent.
ONLY_LOOPBACK = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"

# What the shop's tracking code does on the page (A is the client's analytics object).
CALLS = """
A.page();
A.track('Product Viewed', {product_id: 'KEY-1', sku: 'SKU-1', name: 'Mechanical keyboard', price: 100, currency: 'USD'});
A.track('Product Added', {product_id: 'KEY-1', price: 100, quantity: 1, currency: 'USD'});
A.track('Product Clicked', {product_id: 'KEY-2', recommendation_id: 'rec-js-1', position: 1});
A.track('Order Completed', {order_id: 'ord-1', total: 300, currency: 'USD',
  products: [{product_id: 'KEY-1', price: 100, quantity: 1}, {product_id: 'KEY-2', price: 200, quantity: 1}]});
A.identify('user-1', {plan: 'pro'});
"""
# (Depict type, product_id, recommendation_id) of what CALLS become: an order is one purchase per product.
EXPECTED_DEPICT = Counter(
    [
        ("page_view", None, None),
        ("page_view", "KEY-1", None),
        ("add_to_cart", "KEY-1", None),
        ("click", "KEY-2", "rec-js-1"),
        ("purchase", "KEY-1", None),
        ("purchase", "KEY-2", None),
    ]
)

# The Segment snippet (v5.2.0) as a shop has it, with two changes: the script's URL, and `_cdn`, the collector.
SEGMENT_SNIPPET = """
!function(){var i="analytics",analytics=window[i]=window[i]||[];if(!analytics.initialize)if(analytics.invoked)window.console&&console.error&&console.error("Segment snippet included twice.");else{analytics.invoked=!0;analytics.methods=["trackSubmit","trackClick","trackLink","trackForm","pageview","identify","reset","group","track","ready","alias","debug","page","screen","once","off","on","addSourceMiddleware","addIntegrationMiddleware","setAnonymousId","addDestinationMiddleware","register"];analytics.factory=function(e){return function(){if(window[i].initialized)return window[i][e].apply(window[i],arguments);var n=Array.prototype.slice.call(arguments);if(["track","screen","alias","group","page","identify"].indexOf(e)>-1){var c=document.querySelector("link[rel='canonical']");n.push({__t:"bpc",c:c&&c.getAttribute("href")||void 0,p:location.pathname,u:location.href,s:location.search,t:document.title,r:document.referrer})}n.unshift(e);analytics.push(n);return analytics}};for(var n=0;n<analytics.methods.length;n++){var key=analytics.methods[n];analytics[key]=analytics.factory(key)}analytics.load=function(key,n){var t=document.createElement("script");t.type="text/javascript";t.async=!0;t.setAttribute("data-global-segment-analytics-key",i);t.src="SCRIPT_URL";var r=document.getElementsByTagName("script")[0];r.parentNode.insertBefore(t,r);analytics._loadOptions=n};analytics._writeKey="WRITE_KEY";analytics._cdn="COLLECTOR_URL";analytics.SNIPPET_VERSION="5.2.0";
analytics.load("WRITE_KEY");
var A=analytics;
CALLS
}}();
"""


def segment_snippet_page(collector: str, script_url: str) -> str:
    """A shop page with the Segment snippet, the CDN build (standalone.js) self-hosted next to the page."""
    script = (
        SEGMENT_SNIPPET.replace("SCRIPT_URL", script_url)
        .replace("WRITE_KEY", BROWSER_WRITE_KEY)
        .replace("COLLECTOR_URL", collector)
        .replace("CALLS", CALLS)
    )
    return _page("Segment snippet", "", script)


def segment_npm_page(collector: str, script_url: str) -> str:
    """A shop page with the npm package's UMD build: AnalyticsBrowser.load with cdnURL, the collector."""
    script = f"var A = AnalyticsNext.AnalyticsBrowser.load({{writeKey: {json.dumps(BROWSER_WRITE_KEY)}, cdnURL: {json.dumps(collector)}}});\n{CALLS}"
    return _page("Segment npm", f'<script src="{script_url}"></script>', script)


def rudderstack_page(collector: str, script_url: str) -> str:
    """A shop page with RudderStack's v3 SDK (the build with its plugins bundled): data plane and config at the collector."""
    script = (
        "var A = new rudderanalytics.RudderAnalytics();\n"
        f"A.load({json.dumps(BROWSER_WRITE_KEY)}, {json.dumps(collector)}, {{configUrl: {json.dumps(collector)}}});\n{CALLS}"
    )
    return _page("RudderStack", f'<script src="{script_url}"></script>', script)


def _page(title: str, head: str, script: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{title}</title><link rel=icon href='data:,'>"
        f"{head}<script>{script}</script></head><body><h1>Mechanical keyboard</h1></body></html>"
    )


@dataclass(frozen=True)
class Variant:
    name: str
    client: Client
    file: str
    page: Callable[[str, str], str]


VARIANTS = [
    Variant("segment-snippet", SEGMENT, "dist/umd/standalone.js", segment_snippet_page),
    Variant("segment-npm", SEGMENT, "dist/umd/index.js", segment_npm_page),
    Variant("rudderstack", RUDDERSTACK, "dist/npm/modern/bundled/umd/index.js", rudderstack_page),
]


# the shop's own server -------------------------------------------------------


@dataclass
class ShopServer:
    """The shop's pages and its self-hosted copies of the clients, on 127.0.0.1 (another origin than the collector)."""

    folder: Path
    pages: dict[str, str] = field(default_factory=dict)
    served: list[str] = field(default_factory=list)
    url: str = ""

    def start(self) -> "ShopServer":
        shop = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's API
                shop.served.append(self.path)
                path = self.path.split("?", 1)[0]
                if path in shop.pages:
                    self._answer(200, "text/html; charset=utf-8", shop.pages[path].encode())
                elif path.startswith("/js/") and ".." not in path and (file := shop.folder / path[len("/js/") :]).is_file():
                    self._answer(200, "text/javascript; charset=utf-8", file.read_bytes())
                else:
                    self._answer(404, "text/plain", b"not found")

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_page(self, path: str, html: str) -> str:
        self.pages[path] = html
        return self.url + path

    def script_url(self, client: Client, file: str) -> str:
        return f"{self.url}/js/{client.package}@{client.version}/{file}"


@pytest.fixture(scope="module")
def shop(js_clients_folder: Path) -> Iterator[ShopServer]:
    server = ShopServer(js_clients_folder).start()
    try:
        yield server
    finally:
        server.stop()


def with_origin(config: str, origin: str) -> str:
    """The tests' config with ``origin`` added to the test site's ``origins``."""
    header = f"[sites.{SITE}]\n"
    start = config.index(header) + len(header)
    line_start = config.index("origins = [", start)
    assert config.rfind("\n[", start, line_start) == -1, f"[sites.{SITE}] has no origins line of its own"
    insert_at = line_start + len("origins = [")
    return f'{config[:insert_at]}"{origin}", {config[insert_at:]}'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, shop: ShopServer) -> Iterator[ServeStack]:
    """`collector serve` + `collector worker` whose test site lists the shop server's origin."""
    make_config = lambda depict_url, commerce_url: with_origin(stack_config_toml(depict_url, commerce_url), shop.url)  # noqa: E731
    with ServeStack(tmp_path_factory.mktemp("js-clients"), make_config=make_config) as running:
        yield running


@pytest.fixture(scope="module")
def loopback_chromium(playwright_driver: Any) -> Iterator[Any]:
    from tests.chromium import chromium_from

    with chromium_from(playwright_driver, ONLY_LOOPBACK) as browser:
        yield browser


# one visit ---------------------------------------------------------------------


@dataclass
class Visit:
    """A page in a fresh browser context, with every request it made and what went wrong on it."""

    page: Any
    requests: list[Any] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def posts_to(self, base_url: str) -> list[Any]:
        return [r for r in self.requests if r.method == "POST" and r.url.startswith(base_url + "/")]

    def messages(self, base_url: str) -> list[tuple[Any, dict[str, Any]]]:
        """Every (request, message) the client posted to ``base_url``, a batch's messages one by one."""
        found = []
        for request in self.posts_to(base_url):
            body = json.loads(request.post_data)
            for message in body.get("batch", [body]):
                found.append((request, message))
        return found

    def pump_until(self, predicate: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
        """Poll ``predicate`` while Playwright runs; on a timeout the page's console and requests are in the error."""
        return wait_in_page(self.page, predicate, what, timeout, poll_ms=100, explain=self.report)

    def report(self) -> str:
        lines = ["requests:", *(f"  {r.method} {r.url}" for r in self.requests)]
        lines += ["failed:", *(f"  {f}" for f in self.failures), "console:", *(f"  {c}" for c in self.console)]
        return "\n".join(lines)


@pytest.fixture
def visit(loopback_chromium: Any, stack: ServeStack) -> Iterator[Visit]:
    stack.depict.clear()
    stack.commerce.clear()
    context = loopback_chromium.new_context(viewport={"width": 1000, "height": 700})
    page = context.new_page()
    seen = Visit(page)
    context.on("request", lambda r: seen.requests.append(r))
    context.on("requestfailed", lambda r: seen.failures.append(f"{r.method} {r.url}: {r.failure}"))
    page.on("console", lambda m: seen.console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: seen.console.append(f"pageerror: {e}"))
    try:
        yield seen
    finally:
        context.close()


# what the vendors received -------------------------------------------------------


def depict_events(stack: ServeStack, url: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """(event, the request's headers) of every event Depict accepted for the page at ``url``."""
    return [(event, r.headers) for r in stack.depict.accepted for event in r.json if event.get("url") == url]


def depict_kinds(events: list[tuple[dict[str, Any], dict[str, str]]]) -> Counter:
    return Counter((e["type"], e.get("product_id"), e.get("recommendation_id")) for e, _ in events)


def web_events(stack: ServeStack, event_ids: set[str]) -> list[dict[str, Any]]:
    from collector.mapping.commerce import web_event_id

    wanted = {web_event_id(SITE, event_id) for event_id in event_ids}
    return [r.json for r in stack.commerce.accepted if r.json.get("id") in wanted]


def message_ids(visit: Visit, collector: str) -> dict[str, str]:
    """The clients' messageId of each call, by its name (a track's event name, or page/identify)."""
    return {message.get("event") or message["type"]: message["messageId"] for _, message in visit.messages(collector)}


def account_id(account: Any) -> Any:
    return account.get("id") if isinstance(account, dict) else account


def assert_only_local_hosts(visit: Visit, *base_urls: str) -> None:
    allowed = {urlsplit(url).netloc for url in base_urls}
    elsewhere = [f"{r.method} {r.url}" for r in visit.requests if urlsplit(r.url).netloc not in allowed]
    assert not elsewhere, f"the page sent requests to other hosts than {sorted(allowed)}: {elsewhere}"


# the tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_the_vendors_client_reaches_depict_and_commerce_through_the_collector(variant: Variant, shop: ShopServer, stack: ServeStack, visit: Visit):
    """page(), track() with e-commerce names and identify() arrive at both vendors, mapped and valid, from the page only to 127.0.0.1."""
    url = shop.add_page(f"/products/keyboard-{variant.name}-{uuid.uuid4().hex[:8]}", variant.page(stack.url, shop.script_url(variant.client, variant.file)))
    visit.page.goto(url, wait_until="load")
    user_agent = visit.page.evaluate("navigator.userAgent")

    events = visit.pump_until(
        lambda: (found := depict_events(stack, url)) and depict_kinds(found) >= EXPECTED_DEPICT and found,
        f"Depict to receive {dict(EXPECTED_DEPICT)} for {url}",
    )
    assert depict_kinds(events) == EXPECTED_DEPICT, depict_kinds(events)
    for event, headers in events:
        assert event["url"] == url
        assert headers.get("user-agent") == user_agent, headers
    cart = next(e for e, _ in events if e["type"] == "add_to_cart")
    assert cart["entity_price"] == "100" and cart["currency"] == "USD", cart
    assert {e["currency"] for e, _ in events if e["type"] == "purchase"} == {"USD"}
    assert len({e["deduplication_id"] for e, _ in events}) == len(events), "every Depict event has an id of its own"

    # Commerce: every call as a Web Event, the identified user as the account of identify's
    ids = message_ids(visit, stack.url)
    assert set(ids) == {"page", "Product Viewed", "Product Added", "Product Clicked", "Order Completed", "identify"}, ids
    wanted = set(ids.values()) | {f"{ids['Order Completed']}_1"}  # the order's second product line
    commerce = visit.pump_until(
        lambda: len(found := web_events(stack, wanted)) >= len(wanted) and found, f"Commerce to receive the Web Events of {ids}"
    )
    assert len(commerce) == len(wanted), commerce
    names = Counter(w["name"] for w in commerce)
    assert names["page_view"] == 2 and names["add_to_cart"] == 1 and names["click"] == 1 and names["purchase"] == 2, names
    (identified,) = [w for w in commerce if w["name"] not in ("page_view", "add_to_cart", "click", "purchase")]
    assert account_id(identified.get("account")) == "user-1", identified

    for answer in stack.depict.requests + stack.commerce.requests:
        assert answer.spec_errors == [] and answer.status == 200, (answer.path, answer.status, answer.spec_errors)
    assert_only_local_hosts(visit, stack.url, shop.url)
    assert not visit.failures, visit.report()
    assert not [line for line in visit.console if line.startswith(("error", "pageerror"))], visit.report()


@pytest.mark.parametrize("variant", [VARIANTS[0], VARIANTS[2]], ids=[VARIANTS[0].name, VARIANTS[2].name])
def test_a_resent_message_is_delivered_once(variant: Variant, shop: ShopServer, stack: ServeStack, visit: Visit):
    """The client's own request sent again, byte for byte, reaches Depict and Commerce once."""
    url = shop.add_page(f"/products/resend-{variant.name}-{uuid.uuid4().hex[:8]}", variant.page(stack.url, shop.script_url(variant.client, variant.file)))
    visit.page.goto(url, wait_until="load")
    visit.pump_until(lambda: depict_kinds(depict_events(stack, url)) >= EXPECTED_DEPICT, f"Depict to receive the page's events for {url}")
    (request, message) = next((r, m) for r, m in visit.messages(stack.url) if m.get("event") == "Product Added")
    headers = {name: value for name, value in request.headers.items() if name.lower() in ("authorization", "content-type", "anonymousid", "sentat", "origin", "user-agent")}
    path = urlsplit(request.url).path + (f"?{urlsplit(request.url).query}" if urlsplit(request.url).query else "")

    again = httpx.post(stack.url + path, content=request.post_data.encode(), headers=headers, timeout=10)
    assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text
    # then a new message (the same call with another messageId and product): once it is delivered, so would the resend be
    marker = {**message, "messageId": f"marker-{uuid.uuid4()}", "properties": {**message["properties"], "product_id": "MARKER-1"}}
    body = json.dumps({**json.loads(request.post_data), "batch": [marker]} if "batch" in json.loads(request.post_data) else marker)
    answer = httpx.post(stack.url + path, content=body.encode(), headers=headers, timeout=10)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    visit.pump_until(lambda: ("add_to_cart", "MARKER-1", None) in depict_kinds(depict_events(stack, url)), "Depict to receive the marker")
    visit.pump_until(lambda: len(web_events(stack, {message["messageId"], marker["messageId"]})) >= 2, "Commerce to receive the marker")

    assert depict_kinds(depict_events(stack, url))[("add_to_cart", "KEY-1", None)] == 1
    assert [e["deduplication_id"] for e, _ in depict_events(stack, url) if e.get("product_id") == "KEY-1" and e["type"] == "add_to_cart"] == [message["messageId"]]
    assert len(web_events(stack, {message["messageId"]})) == 1
    assert stack.depict.duplicates() == [] and stack.commerce.duplicates() == []


def rudderstack_beacon_page(collector: str, script_url: str) -> str:
    """RudderStack's SDK told to send with navigator.sendBeacon, which it does when the page is left."""
    script = (
        "var A = new rudderanalytics.RudderAnalytics();\n"
        f"A.load({json.dumps(BROWSER_WRITE_KEY)}, {json.dumps(collector)}, {{configUrl: {json.dumps(collector)}, useBeacon: true}});\n"
        "A.track('Product Added', {product_id: 'KEY-BEACON', price: 100, currency: 'USD'});"
    )
    return _page("RudderStack beacon", f'<script src="{script_url}"></script>', script)


def test_rudderstacks_beacon_sent_as_the_page_is_left_is_delivered(shop: ShopServer, stack: ServeStack, visit: Visit):
    """With useBeacon, an event tracked just before the visitor leaves arrives at Depict.

    The SDK sends it with navigator.sendBeacon to /beacon/v1/batch?writeKey=... as the page is hidden
    (Playwright does not report a beacon sent during unload; the path's answers are tested in
    tests/collector/inbound/sources/test_api.py).
    """
    client, file = RUDDERSTACK, "dist/npm/modern/bundled/umd/index.js"
    url = shop.add_page(f"/products/beacon-{uuid.uuid4().hex[:8]}", rudderstack_beacon_page(stack.url, shop.script_url(client, file)))
    visit.page.goto(url, wait_until="load")
    visit.page.wait_for_timeout(1000)  # the SDK loads its source config, then queues the track for the beacon
    visit.page.goto(shop.add_page("/next-page", _page("next", "", "")), wait_until="load")

    events = visit.pump_until(lambda: depict_events(stack, url), f"Depict to receive the beaconed event for {url}")
    assert [(e["type"], e["product_id"]) for e, _ in events] == [("add_to_cart", "KEY-BEACON")]
    assert_only_local_hosts(visit, stack.url, shop.url)
