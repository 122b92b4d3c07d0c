"""End to end from a real browser: the snippet -> /collect -> Redis -> worker -> vendor stand-ins.

The shop's pages live at ``https://shop.example`` (the test site's
configured origin). Playwright answers that origin: test pages are served
from memory, and every other request (``/t.js``, the settings, ``/collect``,
beacons included) is passed to the live collector of ``tests/conftest.py``,
as a reverse proxy in front of a first-party collector would. The browser
thus sends the real ``Origin`` the site allows.

Leaving a page is not tested here: Playwright's interception aborts the
requests a page makes while it unloads (beacons, keepalive fetches), which a
real network would carry. The recording-collector tests prove that path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.browser.conftest import page_html
from tests.chromium import pump_until as wait_in_page
from tests.conftest import ORIGIN, SITE

VENDOR_WAIT_SECONDS = 20

CARD = (
    '<a id="card" href="#" data-recommendation-id="rec-e2e" data-product-id="KEY-1" '
    'data-click-location="home_recs_1">Mechanical keyboard</a>'
)


class Shop:
    """The shop's origin in the browser, proxied to the live collector; records what the snippet posted."""

    def __init__(self, tab: Any, collector_url: str):
        self.tab = tab
        self.collector_url = collector_url
        self.pages: dict[str, str] = {}
        self.posted: list[dict[str, Any]] = []
        self.answers: list[int] = []
        tab.context.route(f"{ORIGIN}/**", self._handle)

    def _handle(self, route: Any) -> None:
        path = route.request.url[len(ORIGIN) :]
        if path in self.pages:
            route.fulfill(status=200, content_type="text/html", body=self.pages[path])
            return
        if path == "/collect" and route.request.method == "POST":
            self.posted.append(route.request.post_data_json)
        response = route.fetch(url=self.collector_url + path)
        if path == "/collect":
            self.answers.append(response.status)
        route.fulfill(response=response)

    def page(self, path: str, **kwargs: Any) -> str:
        self.pages[path] = page_html(site=SITE, **kwargs)
        return ORIGIN + path

    def event_ids(self, type_: str | None = None) -> list[str]:
        return [e["id"] for body in self.posted for e in body["events"] if type_ is None or e["type"] == type_]

    def wait_posted(self, type_: str) -> list[str]:
        """The ids of the ``type_`` events the snippet posted, once there is one."""
        return pump_until(self.tab, lambda: self.event_ids(type_), f"the snippet to post a {type_} event")


def pump_until(tab: Any, predicate: Callable[[], Any], what: str, timeout: float = VENDOR_WAIT_SECONDS) -> Any:
    return wait_in_page(tab.page, predicate, what, timeout)


@pytest.fixture
def shop(tab, live_stack) -> Iterator[Shop]:
    yield Shop(tab, live_stack.url)
    tab.context.unroute_all(behavior="ignoreErrors")  # requests still in flight when the test ends


def depict_events(live_stack) -> list[dict[str, Any]]:
    return [event for request in live_stack.depict.accepted for event in request.json]


def wait_depict(tab, live_stack, ids: list[str]) -> list[dict[str, Any]]:
    """The Depict events with these deduplication ids, once all arrived."""
    pump_until(tab, lambda: set(ids) <= set(live_stack.depict.event_ids()), f"Depict to receive {ids}")
    return [e for e in depict_events(live_stack) if e.get("deduplication_id") in ids]


def wait_commerce(tab, live_stack, ids: list[str]) -> list[dict[str, Any]]:
    """The Commerce Web Events derived from these event ids, once all arrived."""
    from collector.mapping.commerce import web_event_id

    wanted = {web_event_id(SITE, i) for i in ids}
    pump_until(tab, lambda: wanted <= set(live_stack.commerce.event_ids()), f"Commerce to receive {ids}")
    return [r.json for r in live_stack.commerce.accepted if r.json.get("id") in wanted]


def test_a_page_view_and_an_add_to_cart_reach_both_vendors_valid(tab, shop, live_stack):
    """Events tracked in the browser arrive at Depict and Commerce, valid against their specs."""
    tab.goto(shop.page("/p/keyboard"))
    tab.call("track", "add_to_cart", {"product_id": "KEY-1", "entity_price": "100", "currency": "USD"})
    tab.call("flush")
    ids = shop.wait_posted("page_view") + shop.wait_posted("add_to_cart")
    depict = wait_depict(tab, live_stack, ids)
    assert {e["type"] for e in depict} == {"page_view", "add_to_cart"}
    cart = next(e for e in depict if e["type"] == "add_to_cart")
    assert cart["product_id"] == "KEY-1" and cart["entity_price"] == "100" and cart["currency"] == "USD"
    assert cart["url"] == f"{ORIGIN}/p/keyboard"
    assert cart["document_width"] == "1000"
    commerce = wait_commerce(tab, live_stack, ids)
    assert {w["name"] for w in commerce} == {"page_view", "add_to_cart"}
    assert all(r.spec_errors == [] for r in live_stack.depict.requests + live_stack.commerce.requests)
    pump_until(tab, lambda: len(shop.answers) == len(shop.posted), "the collector's answers")
    assert set(shop.answers) == {202}
    assert tab.errors() == 0 and not tab.page_errors


def test_identify_and_a_web_event_reach_commerce_with_the_account(tab, shop, live_stack):
    """After identify, a named Web Event reaches Commerce with the account; Depict types carry the user id."""
    tab.goto(shop.page("/account"))
    tab.call("identify", {"user_id": "customer-42", "account_id": "acc_0jk3v58djsi1"})
    tab.call("track", "User Login")
    tab.call("track", "purchase", {"product_id": "KEY-1", "entity_price": "100", "currency": "USD"})
    tab.call("flush")
    login_ids = shop.wait_posted("User Login")
    purchase_ids = shop.wait_posted("purchase")
    (login,) = wait_commerce(tab, live_stack, login_ids)
    assert login["name"] == "User Login" and login["account"] == "acc_0jk3v58djsi1"
    (purchase,) = wait_depict(tab, live_stack, purchase_ids)
    assert purchase["user_id"] == "customer-42"
    assert login_ids[0] not in live_stack.depict.event_ids()  # a Web Event is not a Depict type


def test_card_click_and_impression_reach_depict_with_the_recommendation(tab, shop, live_stack):
    """The automatic click and element_visible of a recommendation card arrive at Depict with its ids."""
    tab.goto(shop.page("/home", body=CARD))
    tab.page.click("#card")
    tab.call("flush")
    ids = shop.wait_posted("click") + shop.wait_posted("element_visible")
    events = wait_depict(tab, live_stack, ids)
    for event in events:
        assert event["recommendation_id"] == "rec-e2e" and event["product_id"] == "KEY-1"
    assert {e["type"] for e in events} == {"click", "element_visible"}
