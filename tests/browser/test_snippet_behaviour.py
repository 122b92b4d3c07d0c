"""The snippet's own behaviour in headless Chromium, against the recording collector.

Each test loads a page that installs ``/t.js`` exactly as the contract says
(async tag plus the stub) and reads what reached ``POST /collect``.
"""

from __future__ import annotations

import re
import time

import pytest

from collector.config.defaults import SNIPPET_BATCH_EVENTS
from tests.browser.conftest import SITE

EVENT_FIELDS = {
    "id",
    "type",
    "ts",
    "anonymous_id",
    "session_id",
    "user_id",
    "account_id",
    "url",
    "document_referrer",
    "document_width",
    "props",
}
EVENT_ID = re.compile(r"^[A-Za-z0-9]{16,64}$")

CARDS = """
<div style="height:1600px">top</div>
<a id="card1" href="#" data-recommendation-id="rec-1" data-product-id="P-1" data-click-location="home_recs_1"
   style="display:block;width:300px;height:200px;background:#eee"><span id="inner1">Keyboard</span></a>
<div style="height:1600px">middle</div>
<div id="card2" data-recommendation-id="rec-2" data-product-id="P-2" style="width:300px;height:200px;background:#ddd">Mouse</div>
<div style="height:1600px">bottom</div>
"""


# --- the wire format -------------------------------------------------------


def test_page_view_on_load_carries_exactly_the_wire_fields(tab, recorder, page_factory):
    """A page load sends one page_view, as text/plain, with only the documented fields."""
    url = page_factory()
    tab.goto(url)
    (event,) = recorder.wait_for_events(1, "page_view")
    post = recorder.posts()[0]
    assert post.json["site"] == SITE
    assert set(post.json) == {"site", "events"}
    assert post.headers["Content-Type"].startswith("text/plain")
    assert set(event) <= EVENT_FIELDS
    assert EVENT_ID.match(event["id"])
    assert event["url"] == url
    assert isinstance(event["document_width"], int) and event["document_width"] > 0
    assert abs(event["ts"] - time.time() * 1000) < 60_000
    assert event["anonymous_id"] and event["session_id"]
    assert event["props"] == {}
    assert "user_id" not in event and "account_id" not in event
    assert not recorder.preflights()
    assert tab.errors() == 0


def test_track_sends_props_as_given_and_identify_marks_later_events(tab, recorder, page_factory):
    """PROPS arrive untouched under props; events after identify carry user_id and account_id."""
    tab.goto(page_factory())
    props = {"product_id": "KEY-1", "entity_price": "100", "currency": "USD", "variant_ids": ["v1", "v2"]}
    tab.call("track", "add_to_cart", props)
    tab.call("identify", {"user_id": "customer-42", "account_id": "acc_0jk3v58djsi1"})
    tab.call("track", "User Login")
    tab.call("flush")
    events = recorder.wait_for_events(3)
    by_type = {e["type"]: e for e in events}
    assert by_type["add_to_cart"]["props"] == props
    assert "user_id" not in by_type["add_to_cart"]
    assert by_type["User Login"]["user_id"] == "customer-42"
    assert by_type["User Login"]["account_id"] == "acc_0jk3v58djsi1"
    assert by_type["User Login"]["props"] == {}
    assert len({e["id"] for e in events}) == 3
    assert len({e["anonymous_id"] for e in events}) == 1
    assert len({e["session_id"] for e in events}) == 1


def test_calls_queued_before_the_script_loads_are_replayed(tab, recorder, page_factory):
    """Calls made through the pre-load stub run once the snippet arrives, in order."""
    recorder.script_delay = 0.5
    url = page_factory(
        src="/slow/t.js",
        before="collector('identify',{user_id:'u-1'});collector('track','add_to_cart',{product_id:'P'});"
        "window.queuedBeforeLoad=collector.q.length",
    )
    tab.goto(url)
    assert tab.page.evaluate("window.queuedBeforeLoad") == 2
    events = recorder.wait_for_events(2)
    cart = next(e for e in events if e["type"] == "add_to_cart")
    assert cart["props"] == {"product_id": "P"}
    assert cart["user_id"] == "u-1"
    assert {e["type"] for e in events} == {"add_to_cart", "page_view"}


def test_finds_its_tag_without_document_current_script(tab, recorder):
    """Loaded where document.currentScript is null (a module script), it finds its tag by src and works."""
    from tests.chromium import STUB

    html = (
        "<!doctype html><html><head><link rel=icon href='data:,'>"
        f"<script>{STUB}</script><script type=module src='/t.js' data-site='{SITE}'></script></head><body></body></html>"
    )
    tab.goto(recorder.add_page("module", html))
    (event,) = recorder.wait_for_events(1, "page_view")
    assert recorder.posts()[0].json["site"] == SITE
    assert tab.errors() == 0


def test_a_second_copy_of_the_script_is_harmless(tab, recorder, page_factory):
    """Loading t.js twice counts one page view and sends each event once."""
    tab.goto(page_factory(copies=2))
    tab.call("track", "add_to_cart", {"product_id": "P"})
    tab.call("flush")
    recorder.wait_for_events(2)
    time.sleep(1.5)  # a second copy would have flushed its own page view by now
    assert [e["type"] for e in recorder.events()].count("page_view") == 1
    assert [e["type"] for e in recorder.events()].count("add_to_cart") == 1
    assert tab.errors() == 0
    assert not tab.page_errors and not tab.console_errors


# --- batching and delivery -------------------------------------------------


def test_ten_events_are_sent_at_once_not_after_the_timer(tab, recorder, page_factory):
    """At ten waiting events the batch is sent in the next task, not a second later; all arrive once."""
    tab.context.add_init_script(
        """const realFetch = window.fetch; window.collectFetches = [];
           window.fetch = (...a) => { if (String(a[0]).endsWith('/collect')) collectFetches.push(performance.now());
                                      return realFetch(...a) }"""
    )
    tab.goto(page_factory())
    recorder.wait_for_events(1, "page_view")
    tab.page.wait_for_function("collectFetches.length === 1 && localStorage._col_q === '[]'")
    started = tab.page.evaluate(
        "() => { const t = performance.now(); for (let i = 0; i < 10; i++) collector('track', 'ws_click', {product_id: 'P' + i}); return t }"
    )
    sent = tab.page.wait_for_function("collectFetches.length === 2 && collectFetches[1]").json_value()
    assert sent - started < 500, f"sent {sent - started:.0f} ms after the 10th event"
    tab.page.evaluate("for (let i = 10; i < 25; i++) collector('track', 'ws_click', {product_id: 'P' + i})")
    events = recorder.wait_for_events(25, "ws_click")
    assert [e["props"]["product_id"] for e in events] == [f"P{i}" for i in range(25)]
    assert len(recorder.posts()[1].events) == 10
    assert all(len(p.events) <= SNIPPET_BATCH_EVENTS for p in recorder.posts())
    assert len(recorder.events()) == len(recorder.unique_events())


def test_503_is_retried_with_backoff_honouring_retry_after(tab, recorder, page_factory):
    """Two 503 answers with Retry-After: 1 are retried, no sooner than a second apart, and nothing is lost."""
    recorder.fail_next(2, 503, retry_after="1")
    tab.goto(page_factory())
    tab.call("track", "add_to_cart", {"product_id": "P"})
    tab.call("flush")
    recorder.wait_for(lambda: len(recorder.posts()) >= 3, what="a third attempt")
    posts = recorder.posts()
    assert [e["id"] for e in posts[0].events] == [e["id"] for e in posts[2].events]
    assert posts[1].at - posts[0].at >= 0.95
    assert posts[2].at - posts[1].at >= 0.95
    assert {e["type"] for e in recorder.unique_events()} == {"page_view", "add_to_cart"}
    tab.page.wait_for_function("localStorage._col_q === '[]'")


@pytest.mark.parametrize("status", [408, 429, 500, 502])
def test_other_retryable_answers_are_retried(tab, recorder, page_factory, status):
    """408, 429 and other 5xx answers are retried until the batch is accepted."""
    recorder.fail_next(1, status, retry_after="0")
    tab.goto(page_factory())
    recorder.wait_for(lambda: len(recorder.posts()) >= 2, what="a retry")
    first, second = recorder.posts()[:2]
    assert [e["id"] for e in first.events] == [e["id"] for e in second.events]
    tab.page.wait_for_function("localStorage._col_q === '[]'")


@pytest.mark.parametrize("status", [400, 403, 413, 422])
def test_other_4xx_answers_are_not_retried(tab, recorder, page_factory, status):
    """A batch refused with a 4xx other than 408/429 is dropped, not sent again."""
    recorder.fail_next(1, status)
    tab.goto(page_factory())
    recorder.wait_for(lambda: recorder.posts(), what="the first attempt")
    tab.call("track", "add_to_cart", {"product_id": "P"})
    tab.call("flush")
    recorder.wait_for_events(1, "add_to_cart")
    assert len(recorder.events("page_view")) == 1
    tab.page.wait_for_function("localStorage._col_q === '[]'")


def test_events_tracked_offline_arrive_when_back_online(tab, recorder, page_factory):
    """Events that fail for lack of network are kept and sent once the browser is online again."""
    tab.goto(page_factory())
    recorder.wait_for_events(1, "page_view")
    tab.context.set_offline(True)
    tab.call("track", "add_to_cart", {"product_id": "OFF"})
    tab.call("flush")
    tab.page.wait_for_function("JSON.parse(localStorage._col_q).length === 1")
    time.sleep(0.5)  # the send has failed at least once by now
    assert not recorder.events("add_to_cart")
    tab.context.set_offline(False)
    (event,) = recorder.wait_for_events(1, "add_to_cart")
    assert event["props"] == {"product_id": "OFF"}
    assert tab.errors() == 0


def test_events_tracked_just_before_navigating_away_arrive(tab, recorder, page_factory):
    """A track immediately followed by leaving the page is delivered (beacon on pagehide)."""
    other = page_factory(name="other")
    tab.goto(page_factory())
    recorder.wait_for_events(1, "page_view")
    # the page view's answer is in: else it could arrive as the page is left and send the event by fetch first
    tab.page.wait_for_function("localStorage._col_q === '[]'")
    tab.page.evaluate(f"collector('track', 'add_to_cart', {{product_id: 'LEAVE'}}); location.href = {other!r}")
    (event,) = recorder.wait_for_events(1, "add_to_cart")
    assert event["props"] == {"product_id": "LEAVE"}
    beacon = next(p for p in recorder.posts() if any(e["type"] == "add_to_cart" for e in p.events))
    assert beacon.headers.get("Sec-Fetch-Mode") == "no-cors"  # sendBeacon, not fetch


def test_a_hidden_page_beacons_what_waits(tab, recorder, page_factory):
    """visibilitychange to hidden sends the queue at once, without waiting for the timer."""
    tab.goto(page_factory())
    recorder.wait_for_events(1, "page_view")
    tab.page.evaluate(
        """() => {
        collector('track', 'add_to_cart', {product_id: 'HIDE'});
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
        Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
        document.dispatchEvent(new Event('visibilitychange'));
    }"""
    )
    recorder.wait_for_events(1, "add_to_cart", timeout=0.8)


def test_large_queues_leave_in_beacons_under_60_kb(tab, recorder, page_factory):
    """Leaving with a big queue sends it in several beacons, each under 60 KB, losing nothing."""
    recorder.fail_next(1, 503, retry_after="60")
    other = page_factory(name="other")
    tab.goto(page_factory())
    recorder.wait_for(lambda: recorder.posts(), what="the refused first batch")
    tab.page.evaluate(
        """for (let i = 0; i < 120; i++) collector('track', 'purchase',
             {product_id: 'P' + i, variant_ids: Array.from({length: 40}, (_, j) => 'variant-' + i + '-' + j + '-é')})"""
    )
    tab.goto(other)
    events = recorder.wait_for_events(120, "purchase")
    assert len(events) == 120
    sizes = [len(p.body.encode()) for p in recorder.posts()[1:]]
    assert len(sizes) >= 3 and max(sizes) < 60_000, sizes


def test_unsent_events_are_sent_on_the_next_page_load(tab, recorder, page_factory):
    """Events that could not be sent (settings unknown) wait in localStorage and leave from the next page."""
    recorder.settings_status = 503
    first = page_factory()
    second = page_factory()
    tab.goto(first)
    tab.call("track", "add_to_cart", {"product_id": "KEPT"})
    tab.page.wait_for_function("JSON.parse(localStorage._col_q || '[]').length === 2")
    time.sleep(0.3)
    assert not recorder.posts()
    recorder.settings_status = 200
    tab.goto(second)
    events = recorder.wait_for_events(3)
    assert [e["type"] for e in events].count("page_view") == 2
    assert next(e for e in events if e["type"] == "add_to_cart")["url"] == first


def test_stored_events_older_than_a_day_are_dropped(tab, recorder, page_factory):
    """A stored event older than 24 hours is not sent; a recent one is."""
    tab.context.add_init_script(
        """if (!sessionStorage.seeded) { sessionStorage.seeded = 1; localStorage._col_q = JSON.stringify([
          {id: 'oldoldoldoldoldold', type: 'add_to_cart', ts: Date.now() - 25 * 3600e3, props: {}},
          {id: 'newnewnewnewnewnew', type: 'add_to_cart', ts: Date.now() - 3600e3, props: {}}]) }"""
    )
    tab.goto(page_factory())
    recorder.wait_for_events(2)
    time.sleep(0.3)
    assert {e["id"] for e in recorder.events("add_to_cart")} == {"newnewnewnewnewnew"}


# --- ids and sessions ------------------------------------------------------


def test_ids_persist_across_pages_and_the_visitor_cookie_flows(tab, recorder, page_factory):
    """The anonymous and session ids survive a page load, and the collector's cookie comes back."""
    tab.goto(page_factory())
    (first,) = recorder.wait_for_events(1)
    tab.goto(page_factory())
    events = recorder.wait_for_events(2)
    assert events[1]["anonymous_id"] == first["anonymous_id"]
    assert events[1]["session_id"] == first["session_id"]
    assert "_cid=visitor-cookie-1" in recorder.posts()[1].headers.get("Cookie", "")
    assert "_cid" not in tab.page.evaluate("document.cookie")


def test_depict_session_id_is_used_when_present(tab, recorder, page_factory):
    """With localStorage._dep_id set by Depict's own script, it is the session id."""
    tab.context.add_init_script("localStorage._dep_id = 'depsess1234'")
    tab.goto(page_factory())
    (event,) = recorder.wait_for_events(1)
    assert event["session_id"] == "depsess1234"


def test_session_rolls_after_30_minutes_without_events(tab, recorder, page_factory):
    """A session idle for 31 minutes gets a new id; one idle for 10 keeps its id."""
    tab.context.add_init_script(
        """if (!sessionStorage.seeded) { sessionStorage.seeded = 1;
             localStorage._col_i = JSON.stringify({a: 'anon12345678', z: ['oldsession', Date.now() - 31 * 60e3], u: {}}) }"""
    )
    tab.goto(page_factory())
    (event,) = recorder.wait_for_events(1)
    assert event["anonymous_id"] == "anon12345678"
    assert event["session_id"] != "oldsession"
    tab.page.evaluate("localStorage._col_i = JSON.stringify({a: 'anon12345678', z: ['recentsession', Date.now() - 10 * 60e3], u: {}})")
    tab.call("track", "add_to_cart")
    tab.call("flush")
    (cart,) = recorder.wait_for_events(1, "add_to_cart")
    assert cart["session_id"] == "recentsession"


# --- automatic events ------------------------------------------------------


def test_spa_navigation_counts_each_route_once(tab, recorder, page_factory):
    """pushState, replaceState and popstate count a page view per URL change, never twice for one URL."""
    base = page_factory()
    tab.goto(base)
    recorder.wait_for_events(1, "page_view")
    tab.page.evaluate("history.pushState({}, '', '/spa/a')")
    tab.page.evaluate("history.replaceState({}, '', '/spa/a')")  # same URL: not a view
    tab.page.evaluate("history.pushState({}, '', '/spa/b')")
    tab.page.evaluate("history.replaceState({x: 1}, '', '/spa/b')")  # same URL again
    tab.page.evaluate("history.replaceState({}, '', '/spa/c')")  # a new URL: a view
    tab.page.go_back()  # popstate to /spa/a
    tab.page.wait_for_function("location.pathname === '/spa/a'")
    tab.call("flush")
    views = recorder.wait_for_events(5, "page_view")
    time.sleep(1.2)
    origin = recorder.base_url
    assert [e["url"] for e in recorder.unique_events("page_view")] == [
        base,
        f"{origin}/spa/a",
        f"{origin}/spa/b",
        f"{origin}/spa/c",
        f"{origin}/spa/a",
    ], views
    assert tab.errors() == 0


def test_pageshow_from_the_bfcache_counts_a_page_view(tab, recorder, page_factory):
    """A page restored from the back/forward cache (pageshow with persisted) counts a new page view."""
    tab.goto(page_factory())
    recorder.wait_for_events(1, "page_view")
    tab.page.evaluate("window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))")
    tab.page.evaluate("window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: false}))")
    tab.call("flush")
    recorder.wait_for_events(2, "page_view")
    time.sleep(1.2)
    assert len(recorder.unique_events("page_view")) == 2


def test_click_inside_a_card_sends_its_recommendation(tab, recorder, page_factory):
    """A click on an element inside a data-recommendation-id card sends click with the card's data."""
    tab.goto(page_factory(body=CARDS))
    tab.page.evaluate("document.getElementById('inner1').click()")
    tab.page.evaluate("document.body.click()")  # outside any card: nothing
    tab.call("flush")
    (click,) = recorder.wait_for_events(1, "click")
    assert click["props"] == {"recommendation_id": "rec-1", "product_id": "P-1", "click_location": "home_recs_1"}
    time.sleep(1.2)
    assert len(recorder.events("click")) == 1


def test_a_card_in_view_fires_one_element_visible_and_a_card_scrolled_past_fires_none(tab, recorder, page_factory):
    """A card 60% visible for 500 ms fires element_visible once per page; one scrolled past within 200 ms fires none."""
    tab.goto(page_factory(body=CARDS))
    recorder.wait_for_events(1, "page_view")
    # card2 passes through the viewport, fully visible for 150 ms (the page's own observer proves it was)
    tab.page.evaluate(
        """async () => {
        const card2 = document.getElementById('card2');
        new IntersectionObserver(es => es.forEach(e => { if (e.intersectionRatio >= 0.6) window.card2Seen = true }),
                                 {threshold: 0.6}).observe(card2);
        card2.scrollIntoView({block: 'center'});
        await new Promise(r => setTimeout(r, 150));
        window.scrollTo(0, 0);
    }"""
    )
    # card1 comes into view and stays
    tab.page.evaluate("document.getElementById('card1').scrollIntoView({block: 'center'})")
    (seen,) = recorder.wait_for_events(1, "element_visible")
    assert seen["props"] == {"recommendation_id": "rec-1", "product_id": "P-1", "click_location": "home_recs_1"}
    # out and back in: still once on this page
    tab.page.evaluate("window.scrollTo(0, 0)")
    time.sleep(0.1)
    tab.page.evaluate("document.getElementById('card1').scrollIntoView({block: 'center'})")
    time.sleep(0.8)
    tab.call("flush")
    time.sleep(0.5)
    assert [e["props"]["recommendation_id"] for e in recorder.events("element_visible")] == ["rec-1"]
    assert tab.page.evaluate("window.card2Seen") is True


def test_cards_added_later_and_new_routes_are_watched(tab, recorder, page_factory):
    """A card inserted after load fires element_visible, and again after an SPA navigation."""
    tab.goto(page_factory())
    recorder.wait_for_events(1, "page_view")
    tab.page.evaluate(
        """const c = document.createElement('div'); c.dataset.recommendationId = 'late-1';
           c.dataset.productId = 'P-L'; c.style.cssText = 'width:200px;height:100px';
           setTimeout(() => document.body.appendChild(c), 50)"""
    )
    recorder.wait_for_events(1, "element_visible")
    tab.page.evaluate("history.pushState({}, '', '/next-route')")
    visible = recorder.wait_for_events(2, "element_visible")
    assert [e["props"] for e in visible] == [{"recommendation_id": "late-1", "product_id": "P-L"}] * 2
    assert visible[1]["url"].endswith("/next-route")


# --- privacy ---------------------------------------------------------------


def test_consent_false_sends_nothing_and_forgets_the_ids(tab, recorder, page_factory):
    """After consent(false) nothing is sent, the queue is dropped and the stored ids are gone."""
    tab.goto(page_factory(before="collector('consent', false)"))
    tab.call("track", "add_to_cart", {"product_id": "P"})
    tab.call("flush")
    recorder.assert_quiet(1.5)
    storage = tab.storage()
    assert storage.get("_col_c") == "false"
    assert storage.get("_col_q") in (None, "false")
    assert storage.get("_col_i") in (None, "false")
    assert tab.errors() == 0


def test_consent_false_drops_what_was_waiting(tab, recorder, page_factory):
    """Events queued before consent(false) are never sent; after consent(true) new ones are."""
    recorder.fail_next(1, 503, retry_after="1")
    tab.goto(page_factory())
    recorder.wait_for(lambda: recorder.posts(), what="the refused first batch")
    tab.call("track", "add_to_cart", {"product_id": "BEFORE"})
    tab.call("consent", False)
    time.sleep(1.5)  # the retry would have happened by now
    assert len(recorder.posts()) == 1
    tab.call("consent", True)
    tab.call("track", "add_to_cart", {"product_id": "AFTER"})
    tab.call("flush")
    (event,) = recorder.wait_for_events(1, "add_to_cart")
    assert event["props"] == {"product_id": "AFTER"}
    time.sleep(0.5)
    assert [e["props"].get("product_id") for e in recorder.events("add_to_cart")] == ["AFTER"]


def test_require_consent_holds_everything_until_consent_true(tab, recorder, page_factory):
    """With require_consent, nothing is sent nor stored until consent(true); then the waiting events go."""
    recorder.settings = {"require_consent": True, "honor_gpc": False}
    tab.goto(page_factory())
    tab.call("track", "add_to_cart", {"product_id": "P"})
    tab.page.wait_for_function("localStorage._col_s !== undefined")
    tab.call("flush")
    recorder.assert_quiet(1.3)
    assert tab.storage().get("_col_q") in (None, "false")
    tab.call("consent", True)
    events = recorder.wait_for_events(2)
    assert {e["type"] for e in events} == {"page_view", "add_to_cart"}
    assert all(post.json["consent"] is True for post in recorder.posts()), "the collector drops unmarked batches"


def test_global_privacy_control_is_honoured_when_the_site_asks(tab, recorder, page_factory):
    """With honor_gpc and navigator.globalPrivacyControl true, nothing is sent."""
    recorder.settings = {"require_consent": False, "honor_gpc": True}
    tab.context.add_init_script("Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})")
    tab.goto(page_factory())
    tab.call("track", "add_to_cart", {"product_id": "P"})
    tab.page.wait_for_function("localStorage._col_s !== undefined")
    tab.call("flush")
    recorder.assert_quiet(1.5)
    assert tab.errors() == 0


def test_nothing_is_sent_before_the_site_settings_are_known(tab, recorder, page_factory):
    """While the settings endpoint fails, events are collected but not sent."""
    recorder.settings_status = 500
    tab.goto(page_factory())
    tab.call("track", "add_to_cart")
    tab.call("flush")
    recorder.assert_quiet(1.5)
    recorder.settings_status = 200
    tab.call("flush")  # asks for the settings again, then sends
    recorder.wait_for_events(2)


# --- manners -----------------------------------------------------------------


def test_no_errors_reach_the_host_page(tab, recorder, page_factory):
    """Normal use and bad calls leave no console error and no uncaught exception on the page."""
    tab.goto(page_factory(body=CARDS))
    tab.call("identify", {"user_id": "u"})
    tab.call("track", "add_to_cart", {"product_id": "P"})
    tab.page.evaluate("document.getElementById('card1').click()")
    tab.page.evaluate("document.getElementById('card1').scrollIntoView()")
    tab.page.evaluate("history.pushState({}, '', '/elsewhere')")
    tab.call("page")
    tab.call("flush")
    recorder.wait_for_events(4)
    assert tab.errors() == 0
    # bad calls are swallowed and counted, not thrown
    tab.page.evaluate("collector('identify'); collector('track', 'x', {big: 10n}); collector('no-such-command')")
    assert tab.errors() == 2
    tab.page.evaluate("collector.errors = 0")
    assert tab.errors() == 2
    assert not tab.page_errors
    assert not tab.console_errors


def test_works_under_a_strict_content_security_policy(tab, recorder, page_factory):
    """A page whose CSP allows only its own origin and a nonce gets its events sent, with no violation."""
    csp = "default-src 'none'; script-src 'self' 'nonce-n0nc3'; connect-src 'self'; style-src 'none'; img-src data:"  # data: for the page's own icon
    card = '<p id="card" data-recommendation-id="rec-csp" data-product-id="P-CSP">card</p>'  # no inline style: CSP forbids it
    url = page_factory(nonce="n0nc3", body=card, headers={"Content-Security-Policy": csp})
    tab.context.add_init_script(
        "window.violations = []; document.addEventListener('securitypolicyviolation', e => violations.push(e.violatedDirective))"
    )
    tab.goto(url)
    tab.call("track", "add_to_cart", {"product_id": "CSP"})
    tab.page.click("#card")
    tab.call("flush")
    events = recorder.wait_for_events(4)
    assert {e["type"] for e in events} == {"page_view", "add_to_cart", "click", "element_visible"}
    assert tab.page.evaluate("window.violations") == []
    assert not tab.console_errors
    assert tab.errors() == 0


def test_cross_origin_collector_needs_no_preflight(tab, recorder):
    """From a page on another origin, events are posted with credentials and no CORS preflight."""
    snippet_origin = recorder.base_url
    page_origin = snippet_origin.replace("127.0.0.1", "localhost")
    from tests.browser.conftest import page_html

    recorder.add_page("xorigin", page_html(src=f"{snippet_origin}/t.js"))
    tab.goto(f"{page_origin}/p/xorigin")
    tab.call("track", "add_to_cart", {"product_id": "X"})
    tab.call("flush")
    events = recorder.wait_for_events(2)
    assert all(e["url"].startswith(page_origin) for e in events)
    assert not recorder.preflights()
    assert all(p.headers.get("Origin") == page_origin for p in recorder.posts())
    time.sleep(0.5)
    assert len(recorder.events()) == 2  # answers were readable: nothing was retried
    assert tab.errors() == 0
