"""The console in headless Chromium, against `collector serve` and `collector worker` on their own Redis (tests/stack.py).

The stack's configuration is the tests' sites plus ``[console] token =
"${CONSOLE_TOKEN}"``, the token given to the processes in their
environment. Traffic is sent once per module (:func:`traffic`): delivered
events, a refused request, and two Commerce deliveries the stand-in answers
400, which the worker dead-letters at once. The tests also save the
screenshots the docs show (``console.png``, ``console-mobile.png``) in
``$SCREENSHOT_DIR`` when it is set (``SCREENSHOT_DIR=docs`` renews those of
the README), else in the test's temporary folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Tab
from tests.conftest import COMMERCE_KEY, DEPICT_KEY
from tests.factories import make_event
from tests.stack import ORIGIN, SITE, ServeStack
from tests.stack import config_toml as stack_config_toml
from worker.dead_letters import DeadLetter

TOKEN = "browser-console-token-0123456789"
WAIT_SECONDS = 30
SCREENSHOTS = Path(os.environ["SCREENSHOT_DIR"]) if os.environ.get("SCREENSHOT_DIR") else None
DELIVERED_BATCHES = 4
EVENTS_PER_BATCH = 3


def console_config(depict_url: str, commerce_url: str) -> str:
    return stack_config_toml(depict_url, commerce_url) + '\n[console]\ntoken = "${CONSOLE_TOKEN}"\n'


@pytest.fixture(scope="module")
def stack(chromium: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeStack]:
    """`collector serve` + `collector worker` with the console on (Chromium first, so a missing browser skips before starting anything)."""
    with ServeStack(tmp_path_factory.mktemp("console"), make_config=console_config, env={"CONSOLE_TOKEN": TOKEN}) as deployment:
        yield deployment


def wait_until(predicate: Any, what: str, seconds: float = WAIT_SECONDS) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.1)
    return value


@dataclass
class Traffic:
    delivered_events: int
    dead: list[DeadLetter]


def _post(client: httpx.Client, stack: ServeStack, site: str, events: list[dict]) -> httpx.Response:
    return client.post(f"{stack.url}/collect", json={"site": site, "events": events}, headers={"Origin": ORIGIN})


@pytest.fixture(scope="module")
def traffic(stack: ServeStack) -> Traffic:
    """Events delivered to both vendors, one refused request, and two dead-lettered Commerce deliveries."""
    with httpx.Client(timeout=10) as client:
        for _ in range(DELIVERED_BATCHES):
            events = [make_event("add_to_cart", props={"product_id": "KEY-1", "entity_price": "100", "currency": "USD"}) for _ in range(EVENTS_PER_BATCH)]
            assert _post(client, stack, SITE, events).status_code == 202
        total = DELIVERED_BATCHES * EVENTS_PER_BATCH
        wait_until(lambda: len(stack.depict.event_ids()) >= total and len(stack.commerce.event_ids()) >= total, "the vendors to get the events")
        assert _post(client, stack, "no_such_site", [make_event()]).status_code == 400
        stack.commerce.fail_next(2, 400)
        assert _post(client, stack, SITE, [make_event("User Login"), make_event("User Login")]).status_code == 202
        dead = wait_until(lambda: len(letters := stack.dead_letters()) == 2 and letters, "two dead letters")
        delivered = lambda: sum(  # noqa: E731
            row["delivered"] for row in summary(stack)["events"]["by_site_and_destination"] if row["site"] == SITE
        )
        wait_until(lambda: delivered() >= 2 * total, "the workers to count what they delivered")
    return Traffic(delivered_events=total, dead=dead)


PERSON = "jane.doe@example.com"


def api(stack: ServeStack, path: str, **query: str) -> httpx.Response:
    return httpx.get(f"{stack.url}/console{path}", params=query, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)


def statuses_of(stack: ServeStack, event_id: str) -> dict[str, str]:
    events = [event for site in api(stack, "/api/events", q=event_id).json()["sites"] for event in site["events"]]
    return events[0]["statuses"] if events else {}


@pytest.fixture(scope="module")
def refused_purchase(stack: ServeStack, traffic: Traffic) -> dict:
    """A purchase sent through /collect, which Depict takes and Commerce refuses with a 422 (a dead letter at once)."""
    event = make_event("purchase", user_id=PERSON, props={"product_id": "KEY-42", "entity_price": "100", "currency": "USD"})
    stack.commerce.fail_next(1, 422, body={"title": "Unprocessable Entity", "status": 422, "detail": "name is not a known web event"})
    with httpx.Client(timeout=10) as client:
        assert _post(client, stack, SITE, [event]).status_code == 202
    wait_until(lambda: statuses_of(stack, event["id"]) == {"depict": "delivered", "commerce": "dead"}, "Depict delivered and Commerce dead in the tail")
    return event


def test_the_event_page_says_why_a_purchase_did_not_reach_commerce(stack: ServeStack, refused_purchase: dict):
    """The event's page shows Depict's request and 200, Commerce's request, its 422 answer and the dead letter's reason; no API key or e-mail anywhere."""
    answer = api(stack, f"/events/{refused_purchase['id']}", site=SITE)
    assert answer.status_code == 200
    html = answer.text
    for secret in (DEPICT_KEY, COMMERCE_KEY, PERSON):
        assert secret not in html
    depict = html[html.index('id="destination-depict"') :]
    depict = depict[: depict.index("</section>")]
    commerce = html[html.index('id="destination-commerce"') :]
    commerce = commerce[: commerce.index("</section>")]
    assert 'data-status="delivered"' in depict and 'data-outcome="delivered"' in depict and "HTTP 200" in depict
    assert f"POST {stack.depict.url}" in depict and "X-API-KEY: ***" in depict and "KEY-42" in depict
    assert 'data-outcome="dead"' in commerce and "HTTP 422" in commerce and "name is not a known web event" in commerce
    assert f"POST {stack.commerce.url}" in commerce and "Authorization: Bearer ***" in commerce
    assert "Dead letter" in commerce and "<strong>HTTP 422</strong> after 1 attempt" in commerce
    [row] = [event for site in api(stack, "/api/events", q=refused_purchase["id"]).json()["sites"] for event in site["events"]]
    assert row["source"] == "snippet" and row["traced"] is True and row["answers"] == {"depict": 200, "commerce": 422}


def test_from_the_tail_a_phone_opens_the_event_and_nothing_scrolls_sideways(chromium: Any, stack: ServeStack, refused_purchase: dict, tmp_path: Path):
    """At 390 px the dashboard and the event page fit the screen; the tail row says delivered / dead and snippet, and opens the event."""
    context = chromium.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True, has_touch=True)
    try:
        tab = Tab(context)
        log_in(tab, stack)
        page = tab.page
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        row = page.locator(f"#tail tr[data-event-id='{refused_purchase['id']}']")
        assert row.locator(".status[data-destination='depict']").get_attribute("data-status") == "delivered"
        assert row.locator(".status[data-destination='commerce']").get_attribute("data-status") == "dead"
        assert row.locator("td.source").inner_text() == "snippet"
        box = row.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        page.evaluate("document.getElementById('tail').scrollIntoView()")
        page.screenshot(path=str(screenshot_path("console-mobile.png", tmp_path)))
        with page.expect_navigation():
            row.locator("a.event-link").click()
        assert f"/console/events/{refused_purchase['id']}" in page.url
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert page.locator("#destination-commerce .dead-letter").is_visible()
        assert "HTTP 422" in page.locator("#destination-commerce").inner_text()
        page.locator("#destination-commerce details.request summary").first.click()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(screenshot_path("console-event-mobile.png", tmp_path)), full_page=True)
        assert_no_errors(tab)
    finally:
        context.close()


def summary(stack: ServeStack) -> dict:
    answer = httpx.get(f"{stack.url}/console/api/summary", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
def console_tab(chromium: Any) -> Iterator[Tab]:
    """A fresh browser context (no cookies) at 1200 x 900, collecting console errors and page errors."""
    context = chromium.new_context(viewport={"width": 1200, "height": 900})
    try:
        yield Tab(context)
    finally:
        context.close()


def log_in(tab: Tab, stack: ServeStack, token: str = TOKEN) -> None:
    tab.page.goto(f"{stack.url}/console/")
    tab.page.fill("#token", token)
    tab.page.click("#login-form button[type=submit]")
    tab.page.wait_for_load_state("load")


def assert_no_errors(tab: Tab) -> None:
    assert not tab.console_errors, tab.console_errors
    assert not tab.page_errors, tab.page_errors


def test_without_the_token_only_the_login_form_is_shown(console_tab: Tab, stack: ServeStack):
    """A browser without a session lands on the login form, a wrong token keeps it there, and a wrong bearer is a 401."""
    page = console_tab.page
    page.goto(f"{stack.url}/console/")
    assert "/console/login" in page.url
    assert page.locator("#login-form #token").is_visible()
    assert page.locator("#dead-letters, #chart").count() == 0
    log_in(console_tab, stack, token="not-the-console-token-0000")
    assert "/console/login" in page.url and page.locator("#dead-letters").count() == 0
    assert "not the console token" in page.locator("#login-form .error").inner_text()
    answer = httpx.get(f"{stack.url}/console/", headers={"Authorization": "Bearer not-the-console-token-0000"}, timeout=10)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == 401
    assert [c for c in console_tab.context.cookies() if c["name"] == "collector_console"] == []
    assert_no_errors(console_tab)


def test_after_logging_in_the_chart_shows_the_delivered_events(console_tab: Tab, stack: ServeStack, traffic: Traffic):
    """Logged in through the form, the dashboard's chart has bars for the events the worker delivered, per destination."""
    log_in(console_tab, stack)
    page = console_tab.page
    assert page.url.rstrip("/").endswith("/console")
    [cookie] = [c for c in console_tab.context.cookies() if c["name"] == "collector_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    for destination in ("depict", "commerce"):
        chart = page.locator(f"figure.chart-card[data-site='{SITE}'][data-destination='{destination}']")
        assert int(chart.get_attribute("data-delivered")) >= traffic.delivered_events
        bars = chart.locator("svg.chart rect.delivered")
        assert bars.count() >= 1
        assert sum(int(n) for n in bars.evaluate_all("rects => rects.map(r => r.dataset.count)")) >= traffic.delivered_events
        assert bars.first.bounding_box()["height"] > 0
    failed = page.locator(f"figure.chart-card[data-site='{SITE}'][data-destination='commerce'] rect.failed")
    assert failed.count() >= 1
    assert "add_to_cart" in page.locator("#tail").inner_text()
    assert "unknown site" in page.locator("#refusals").inner_text()
    assert_no_errors(console_tab)


def test_the_live_panels_refresh_in_place(console_tab: Tab, stack: ServeStack, traffic: Traffic):
    """With ``?refresh=1`` the live tail shows a new batch within seconds, without reloading the page or an error."""
    log_in(console_tab, stack)
    page = console_tab.page
    page.goto(f"{stack.url}/console/?refresh=1")
    page.evaluate("window.notReloaded = true")
    page.locator(f"#tail-{SITE} summary").click()  # closed by the reader: stays closed across refreshes
    event = make_event("purchase", props={"product_id": "KEY-1", "entity_price": "100", "currency": "USD"})
    with httpx.Client(timeout=10) as client:
        assert _post(client, stack, SITE, [event]).status_code == 202
    page.wait_for_function(
        "id => document.getElementById('tail').textContent.includes(id)", arg=event["id"], timeout=WAIT_SECONDS * 1000
    )
    assert page.evaluate("window.notReloaded") is True
    assert page.locator(f"#tail-{SITE}").get_attribute("open") is None
    assert_no_errors(console_tab)


def screenshot_path(name: str, tmp_path: Path) -> Path:
    folder = SCREENSHOTS or tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def test_a_dead_letter_is_replayed_by_its_button_and_delivered(console_tab: Tab, stack: ServeStack, traffic: Traffic, tmp_path: Path):
    """Clicking Replay on a dead letter's row puts it back; the worker delivers it to Commerce and the row is gone."""
    log_in(console_tab, stack)
    page = console_tab.page
    page.screenshot(path=str(screenshot_path("console.png", tmp_path)))
    letter = next(letter for letter in traffic.dead if letter.delivery["id"] in {l.delivery["id"] for l in stack.dead_letters()})
    delivery_id, wev_id = letter.delivery["id"], letter.delivery["body"]["id"]
    row = page.locator(f"tr[data-delivery-id='{delivery_id}']")
    assert "HTTP 400" in row.inner_text() and "commerce" in row.inner_text()
    assert wev_id not in stack.commerce.event_ids()
    with page.expect_navigation():
        row.locator("button.replay").click()
    assert "Requeued 1 dead letter." in page.locator(".flash").inner_text()
    wait_until(lambda: wev_id in stack.commerce.event_ids(), f"Commerce to receive the replayed {wev_id}")
    assert delivery_id not in {l.delivery["id"] for l in stack.dead_letters()}
    page.reload()
    assert page.locator(f"tr[data-delivery-id='{delivery_id}']").count() == 0
    assert_no_errors(console_tab)


def test_at_390_px_wide_the_page_never_scrolls_sideways(chromium: Any, stack: ServeStack, traffic: Traffic, tmp_path: Path):
    """On a 390 px phone the page is no wider than the screen: the tail's and the dead letters' rows stack, nothing scrolls sideways."""
    context = chromium.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True, has_touch=True)
    try:
        tab = Tab(context)
        log_in(tab, stack)
        page = tab.page
        assert page.locator("tr[data-delivery-id]").count() >= 1
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        tail = page.locator(f"#tail-{SITE} .table-wrap")
        assert tail.evaluate("el => el.scrollWidth <= el.clientWidth")  # the tail's rows stack: not even the table scrolls
        replay = page.locator("tr[data-delivery-id] button.replay").first
        box = replay.bounding_box()  # a dead letter's buttons are in reach without scrolling sideways
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        sizes = page.evaluate("[...document.querySelectorAll('td, p, button')].map(e => parseFloat(getComputedStyle(e).fontSize))")
        assert min(sizes) >= 12
        assert_no_errors(tab)
    finally:
        context.close()

