"""End to end: from ``collector('track', ...)`` in headless Chromium to its arrival at the vendor stand-ins.

The stack: an embedded Redis, the collector under gunicorn (``collector
serve``, sync workers), ``collector worker``, the bench's fast stand-ins,
and a shop page served from another 127.0.0.1 port (the site's configured
origin) that installs the snippet from the collector as a site would. The
snippet fetches ``/sites/<site>/settings.json`` first, then sends to
``/collect`` cross-origin (``text/plain``, no preflight).

For each event the page takes the wall-clock time right before the track
call (``performance.timeOrigin + performance.now()``); the stand-ins note
``time.time()`` when the request arrives: the same clock. Playwright's
request events give the event id the snippet made up (found by the event's
unique ``product_id``); the Commerce id is derived from it. An event's
latency is its arrival at the later of the two vendors. Events go one at a
time: the next is tracked once the last one arrived.

Two modes: default flush settings (the snippet sends 1 s after the first
waiting event), target median < 1.5 s; ``collector('flush')`` right after
the track call, target median < 100 ms. The baseline is the same pipeline
without the browser: one-event batches POSTed to ``/collect`` by Python,
timed the same way (collector -> Redis -> worker -> stand-ins).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from collector.mapping.commerce import web_event_id
from tests.bench import browser
from tests.bench.payload import HEADERS, batch, new_nonce
from tests.bench.report import Row, heading, percentile, ratio, table
from tests.bench.site import ORIGIN, SITE, write_config
from tests.bench.stack import Stack, serve_workers
from tests.bench.standin import NOTE, Receipts, start_standins
from tests.chromium import CHROMIUM, chromium_available, launched_chromium

TARGET_MS = {"default flush": 1500.0, "flush after track": 100.0}
EVENT_TIMEOUT_SECONDS = 10.0
POLL_MS = 5
# In the page: the wall-clock time (seconds) just before the track call.
TRACK = """([productId, flush]) => {
  const at = performance.timeOrigin + performance.now();
  collector('track', 'add_to_cart', {product_id: productId, entity_price: '100', currency: 'USD'});
  if (flush) collector('flush');
  return at / 1000;
}"""


@dataclass
class Latencies:
    """Seconds from the start of sending to arrival, per event: at Depict, at Commerce."""

    depict: list[float] = field(default_factory=list)
    commerce: list[float] = field(default_factory=list)
    missing: int = 0

    @property
    def both(self) -> list[float]:
        return [max(d, c) for d, c in zip(self.depict, self.commerce)]

    def add(self, started: float, arrivals: tuple[float, float] | None) -> None:
        if arrivals is None:
            self.missing += 1
            return
        self.depict.append(arrivals[0] - started)
        self.commerce.append(arrivals[1] - started)


def arrivals(receipts: Receipts, event_id: str) -> tuple[float, float] | None:
    """When the event reached Depict and Commerce, once it reached both."""
    depict = receipts.received_at("depict", event_id)
    commerce = receipts.received_at("commerce", web_event_id(SITE, event_id))
    return (depict, commerce) if depict is not None and commerce is not None else None


def wait_arrivals(
    receipts: Receipts, event_id: Callable[[], str | None], pause: Callable[[], None]
) -> tuple[float, float] | None:
    """Poll (calling ``pause`` between tries) until the event reached both vendors, or give up."""
    deadline = time.monotonic() + EVENT_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        known = event_id()
        found = arrivals(receipts, known) if known else None
        if found is not None:
            return found
        pause()
    return None


# the baseline: POST /collect from Python


def python_latencies(collector_url: str, receipts: Receipts, samples: int) -> Latencies:
    latencies = Latencies()
    nonce = new_nonce()
    with httpx.Client(headers=HEADERS, timeout=10) as client:
        for n in range(samples + 1):  # the first one warms up
            event_id = f"{nonce}-py-{n}"
            body = json.dumps(batch([event_id]))
            started = time.time()
            client.post(f"{collector_url}/collect", content=body).raise_for_status()
            found = wait_arrivals(receipts, lambda: event_id, lambda: time.sleep(POLL_MS / 1000))
            if n:
                latencies.add(started, found)
    return latencies


# ours: from the browser


class ShopPage:
    """A tab on the shop page; notes the event ids the snippet posts, by product id."""

    def __init__(self, chromium: Any, url: str):
        self.context = chromium.new_context()
        self.page = self.context.new_page()
        self.ids: dict[str, str] = {}
        self.page.on("request", self._seen)
        self.page.goto(url, wait_until="load")
        self.page.wait_for_function("window.collector && 'errors' in window.collector")
        self.page.wait_for_function("localStorage._col_s !== undefined")  # the site settings arrived

    def _seen(self, request: Any) -> None:
        if request.method == "POST" and request.url.endswith("/collect"):
            for event in request.post_data_json["events"]:
                self.ids[event["props"].get("product_id", "")] = event["id"]

    def latencies(self, receipts: Receipts, samples: int, flush: bool) -> Latencies:
        latencies = Latencies()
        nonce = new_nonce()
        for n in range(samples + 1):  # the first one warms up
            product_id = f"E2E-{nonce}-{n}"
            started = self.page.evaluate(TRACK, [product_id, flush])
            found = wait_arrivals(receipts, lambda: self.ids.get(product_id), lambda: self.page.wait_for_timeout(POLL_MS))
            if n:
                latencies.add(started, found)
        return latencies

    def errors(self) -> int:
        return self.page.evaluate("window.collector.errors")

    def close(self) -> None:
        self.context.close()


class ShopSite:
    """The shop's page (WSGI): installs the snippet from the collector, whose URL is set once it runs."""

    collector_url = ""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        html = (
            "<!doctype html><html><head><meta charset=utf-8><title>shop</title><link rel=icon href='data:,'>"
            f"{browser.snippet_tags(self.collector_url + '/t.js', SITE)}</head><body><p>a shop page</p></body></html>"
        )
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")])
        return [html.encode()]


def browser_latencies(shop_url: str, receipts: Receipts, samples: int) -> dict[str, Latencies]:
    """Each mode in a fresh browser context (empty storage, no cookie)."""
    results = {}
    with launched_chromium() as chromium:
        for mode in TARGET_MS:
            page = ShopPage(chromium, shop_url + "/")
            try:
                results[f"browser, {mode}"] = page.latencies(receipts, samples, flush=mode == "flush after track")
                if page.errors():
                    print(f"  ! the snippet swallowed {page.errors()} errors ({mode})")
            finally:
                page.close()
    return results


def _ms(values: list[float], pct: float) -> str:
    return f"{percentile(values, pct) * 1000:.0f}"


def _row_cells(name: str, latencies: Latencies) -> list[str]:
    both = latencies.both
    return [name, str(len(both)), str(latencies.missing), _ms(both, 50), _ms(both, 95), _ms(latencies.depict, 50),
            _ms(latencies.commerce, 50)]  # fmt: skip


def run(quick: bool = False) -> list[Row]:
    samples = 5 if quick else 20
    heading("3. End to end: collector('track') in headless Chromium -> stand-ins")
    if not chromium_available():
        print(f"no Chromium at {CHROMIUM}: skipped (apt-get install chromium)")
        return [Row("e2e", f"median, {mode}", "—", "—", None, f"< {target:g} ms", None) for mode, target in TARGET_MS.items()]
    print(NOTE)
    shop = ShopSite()
    with Stack("e2e") as stack, browser.serve(shop) as shop_url:
        redis_server = stack.redis()
        standins = start_standins(stack)
        config = write_config(stack.dir / "collector.toml", standins.depict_url, standins.commerce_url, (shop_url, ORIGIN))
        _, shop.collector_url = stack.collector(config, redis_server.url, serve_workers())
        stack.worker(config, redis_server.url)
        print(f"collector: gunicorn (collector serve, {serve_workers()} sync workers); shop page at {shop_url}; "
              f"{samples} events per mode (+1 warm-up), one at a time")
        results = {"python POST /collect": python_latencies(shop.collector_url, standins.receipts, samples)}
        results.update(browser_latencies(shop_url, standins.receipts, samples))
        print(table(["sender", "events", "missing", "median ms", "p95 ms", "median at Depict", "median at Commerce"],
                    [_row_cells(name, latencies) for name, latencies in results.items()]))  # fmt: skip
    baseline = percentile(results["python POST /collect"].both, 50) * 1000
    rows = []
    for mode, target in TARGET_MS.items():
        latencies = results[f"browser, {mode}"]
        ours = percentile(latencies.both, 50) * 1000
        rows.append(Row("e2e", f"median, {mode}", f"{baseline:.0f} ms (Python POST)", f"{ours:.0f} ms",
                        ratio(ours, baseline), f"< {target:g} ms", ours < target and not latencies.missing))  # fmt: skip
    return rows
