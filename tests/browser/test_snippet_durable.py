"""Nothing lost at page leave: the snippet keeps every event in localStorage until a 2xx answer covers it.

The first two tests run end to end, the shop and its collector on one real
origin (``tests/browser/first_party.py``: no request interception, which
would abort what a page sends while it unloads), and count what reaches the
vendor stand-ins. The others check the store itself against the recording
collector: storage absent or full, and two tabs sharing it.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.config.defaults import DEPICT_EVENT_TYPES
from collector.mapping.commerce import web_event_id
from tests.browser.first_party import Shop, open_page, regular_page, running_shop
from tests.chromium import pump_until as pump
from tests.conftest import SITE

VENDOR_WAIT_SECONDS = 20
CARD = '<div id="card" data-recommendation-id="rec-leave" data-product-id="KEY-1">Keyboard</div>'
CART = "collector('track', 'add_to_cart', {product_id: 'KEY-1', entity_price: '100', currency: 'USD'})"
# how many times the page called sendBeacon, kept where the next page can read it
COUNT_BEACONS = """(() => { const send = navigator.sendBeacon.bind(navigator);
  navigator.sendBeacon = (url, body) => { try { localStorage.beacons = (+localStorage.beacons || 0) + 1 } catch {}
                                          return send(url, body) } })()"""


@pytest.fixture
def shop(tmp_path: Path, live_stack: Any) -> Iterator[Shop]:
    with running_shop(tmp_path, live_stack) as shop:
        yield shop


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    with regular_page(chromium, COUNT_BEACONS) as page:
        yield page


def pump_until(page: Any, predicate: Any, what: str, timeout: float = VENDOR_WAIT_SECONDS) -> Any:
    return pump(page, predicate, what, timeout)


def stored(page: Any) -> dict[str, str]:
    """The events waiting in localStorage, id -> type."""
    return page.evaluate("Object.fromEntries((JSON.parse(localStorage._col_q || '[]') || []).map(e => [e.id, e.type]))")


def leave(page: Any) -> None:
    """Navigate away: the page is hidden, then unloaded (or frozen in the back/forward cache)."""
    page.goto("about:blank")


def delivered_once(page: Any, live_stack: Any, events: dict[str, str]) -> None:
    """Each event (id -> type) reached Depict (its own types) and Commerce (every event), and nothing arrived twice."""
    depict_wanted = {i for i, kind in events.items() if kind in DEPICT_EVENT_TYPES}
    commerce_wanted = {web_event_id(SITE, i) for i in events}

    def arrived() -> bool:
        return depict_wanted <= set(live_stack.depict.event_ids()) and commerce_wanted <= set(live_stack.commerce.event_ids())

    pump_until(page, arrived, f"both vendors to receive {events}")
    page.wait_for_timeout(1000)  # a copy sent twice would have been delivered by now
    depict = collections.Counter(live_stack.depict.event_ids())
    commerce = collections.Counter(live_stack.commerce.event_ids())
    assert {i: depict[i] for i in depict_wanted} == dict.fromkeys(depict_wanted, 1)
    assert {i: commerce[i] for i in commerce_wanted} == dict.fromkeys(commerce_wanted, 1)
    assert not live_stack.depict.duplicates() and not live_stack.commerce.duplicates()
    assert all(r.spec_errors == [] for r in live_stack.depict.requests + live_stack.commerce.requests)


# --- end to end: page leave ------------------------------------------------------------------


def test_events_of_a_page_left_while_the_collector_is_unreachable_arrive_from_the_next_page(page, shop, live_stack):
    """Events tracked, and beaconed at page leave, while the collector refuses connections reach each vendor once, from the next page."""
    open_page(page, shop.page("first", body=CARD))
    page.wait_for_function("localStorage._col_s && localStorage._col_q === '[]'")  # the page view was answered
    shop.stop()
    page.evaluate(CART)
    page.wait_for_timeout(1500)  # its fetch is refused; it waits to be retried
    page.click("#card")
    page.evaluate("collector('track', 'User Login'); collector('flush')")  # flush: the queue is written to localStorage now
    held = stored(page)
    assert {"add_to_cart", "click", "User Login"} <= set(held.values()), held
    leave(page)

    shop.start_again()
    open_page(page, shop.page("second"))
    assert page.evaluate("+localStorage.beacons") >= 1, "the first page did not beacon at leave"
    pump_until(page, lambda: set(held) <= set(shop.event_types()) and not stored(page), "the second page to send what the first left")
    delivered_once(page, live_stack, shop.event_types())
    assert page.evaluate("collector.errors") == 0 and not page.errors


def test_events_whose_beacon_arrived_are_sent_again_and_still_delivered_once(page, shop, live_stack):
    """A beacon gets no answer, so its events are sent again from the next page: the collector's dedupe drops the copies."""
    open_page(page, shop.page("first", body=CARD))
    page.wait_for_function("localStorage._col_s && localStorage._col_q === '[]'")
    first = len(shop.posted)
    page.evaluate(CART)
    page.click("#card")
    leave(page)  # within the second the events wait: they leave by sendBeacon
    pump_until(page, lambda: len(shop.posted) > first, "the beacon to reach the collector")
    held = {event["id"]: event["type"] for body in shop.posted[first:] for event in body["events"]}
    assert {"add_to_cart", "click"} <= set(held.values()), held
    delivered_once(page, live_stack, held)

    open_page(page, shop.page("second"))
    pump_until(page, lambda: not stored(page), "the second page to send them again and be answered")
    copies = collections.Counter(event["id"] for body in shop.posted for event in body["events"])
    assert {i: copies[i] for i in held} == dict.fromkeys(held, 2)  # by the beacon, then by the second page
    delivered_once(page, live_stack, shop.event_types())
    assert page.evaluate("+localStorage.beacons") >= 1
    assert page.evaluate("collector.errors") == 0 and not page.errors


# --- the store: absent, full, shared by tabs ---------------------------------------------------

NO_STORAGE = """Object.defineProperty(window, 'localStorage', {get() { throw new DOMException('denied', 'SecurityError') }})"""
# fill localStorage to its quota once, before the snippet's first write: every later write that grows it fails
FULL_STORAGE = """if (!sessionStorage.filled) { sessionStorage.filled = 1;
  for (let n = 1 << 22; n >= 1; n >>= 1) { const s = 'x'.repeat(n); try { for (let i = 0; ; i++) localStorage['fill' + n + '.' + i] = s } catch {} } }"""


@pytest.mark.parametrize("storage", ["absent", "full"])
def test_without_usable_storage_nothing_throws_and_events_are_still_sent(tab, recorder, page_factory, storage):
    """With localStorage refused (Safari private mode of old, a sandbox) or full, the snippet works from memory, silently."""
    tab.context.add_init_script(NO_STORAGE if storage == "absent" else FULL_STORAGE)
    tab.goto(page_factory(body=CARD))
    tab.call("identify", {"user_id": "u-1"})
    tab.call("track", "add_to_cart", {"product_id": "P"})
    tab.page.click("#card")
    tab.call("flush")
    events = recorder.wait_for_events(3)
    assert {"page_view", "add_to_cart", "click"} <= {e["type"] for e in events}
    assert next(e for e in events if e["type"] == "add_to_cart")["user_id"] == "u-1"
    tab.page.evaluate("document.dispatchEvent(new Event('visibilitychange')); window.dispatchEvent(new Event('pagehide'))")
    if storage == "full":  # still full: the test did what it says
        assert tab.page.evaluate("(() => { try { localStorage.probe = 'x'.repeat(64); return 'written' } catch (e) { return e.name } })()") == "QuotaExceededError"
    assert tab.errors() == 0
    assert not tab.page_errors and not tab.console_errors


def test_tabs_keep_each_others_stored_events(tab, recorder, page_factory):
    """A tab writing the store keeps the events other tabs left there; the next page sends them all, each id once.

    Each tab first settles (its first batch refused with Retry-After: 60, so no
    timer of its own writes the store during the test), and each step waits
    until the other tab sees the last write: Chromium passes localStorage
    changes between renderers asynchronously, and this test is about the
    snippet's merge, not about that window.
    """
    recorder.fail_next(1000, 503, retry_after="60")  # nothing is accepted: everything stays stored
    b = tab.context.new_page()
    b.goto(page_factory(), wait_until="load")
    recorder.wait_for(lambda: len(recorder.posts()) >= 1, what="b's first batch")
    tab.goto(page_factory())
    recorder.wait_for(lambda: len(recorder.posts()) >= 2, what="the tab's first batch")
    b.evaluate("collector('track', 'ws_click', {product_id: 'B'}); collector('flush')")
    tab.page.wait_for_function("localStorage._col_q.includes('\"B\"')")
    tab.call("track", "add_to_cart", {"product_id": "A"})
    tab.call("flush")
    b.wait_for_function("localStorage._col_q.includes('\"A\"')")
    b.evaluate("collector('track', 'ws_click', {product_id: 'B2'}); collector('flush')")  # b rewrites the store
    tab.page.wait_for_function("localStorage._col_q.includes('\"B2\"')")
    kept = tab.page.evaluate("JSON.parse(localStorage._col_q).map(e => e.props.product_id || e.type)")
    assert sorted(kept) == ["A", "B", "B2", "page_view", "page_view"], kept
    b.close()
    tab.page.close()

    recorder.reset()
    last = tab.context.new_page()
    last.goto(page_factory(), wait_until="load")
    events = recorder.wait_for_events(6)
    assert sorted(e["props"].get("product_id", e["type"]) for e in events) == ["A", "B", "B2", "page_view", "page_view", "page_view"]
    last.wait_for_function("localStorage._col_q === '[]'")
