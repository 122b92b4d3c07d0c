"""End to end: /collect on a real port -> Redis -> `collector worker` process -> vendor stand-ins."""

from __future__ import annotations

import httpx

from tests.conftest import DEPICT_KEY, COMMERCE_KEY, ORIGIN, OTHER_SITE, SITE
from tests.factories import make_event

BROWSER_HEADERS = {
    "Origin": ORIGIN,
    "Referer": "https://shop.example/p/keyboard",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0",
    "Content-Type": "text/plain",
}


def send(live_stack, events, site=SITE) -> httpx.Response:
    return httpx.post(f"{live_stack.url}/collect", json={"site": site, "events": events}, headers=BROWSER_HEADERS, timeout=10)


def test_an_event_arrives_at_both_vendors_spec_valid_with_keys_and_headers(live_stack):
    """A purchase posted to /collect reaches Depict and Commerce, valid against their specs."""
    event = make_event("purchase", user_id="customer-42", account_id="acc_0jk3v58djsi1", props={"product_id": "KEY-1", "entity_price": "100", "currency": "USD"})
    assert send(live_stack, [event]).status_code == 202

    depict_request = live_stack.depict.wait_for(1)[0]
    assert depict_request.spec_errors == []
    assert depict_request.headers["x-api-key"] == DEPICT_KEY
    assert depict_request.headers["referer"] == BROWSER_HEADERS["Referer"]
    assert depict_request.headers["user-agent"] == BROWSER_HEADERS["User-Agent"]
    assert depict_request.headers["x-forwarded-for"] == "127.0.0.1"
    assert depict_request.headers["x-forwarded-host"].startswith("127.0.0.1:")
    [sent] = depict_request.json
    assert sent["deduplication_id"] == event["id"] and sent["user_id"] == "customer-42" and sent["tenant"] == "test_tenant"

    commerce_request = live_stack.commerce.wait_for(1)[0]
    assert commerce_request.spec_errors == []
    assert commerce_request.headers["authorization"] == f"Bearer {COMMERCE_KEY}"
    web_event = commerce_request.json
    assert web_event["name"] == "purchase" and web_event["account"] == "acc_0jk3v58djsi1"
    assert web_event["id"].startswith("wev_") and len(web_event["id"]) == 16


def test_a_batch_is_one_depict_request_and_one_commerce_request_per_event(live_stack):
    """Ten events: one Depict array of ten, ten Web Events, no duplicates."""
    events = [make_event("element_visible", props={"recommendation_id": f"rec-{i}"}) for i in range(10)]
    assert send(live_stack, events).json()["accepted"] == 10
    live_stack.depict.wait_for(lambda requests: sum(len(r.json) for r in requests if r.status == 200) >= 10)
    live_stack.commerce.wait_for(10)
    assert sorted(live_stack.depict.event_ids()) == sorted(e["id"] for e in events)
    assert len(live_stack.commerce.event_ids()) == 10
    assert live_stack.depict.duplicates() == [] and live_stack.commerce.duplicates() == []


def test_a_browser_resend_is_delivered_once(live_stack):
    """The same event posted twice reaches each vendor once."""
    event = make_event("add_to_cart", props={"product_id": "KEY-9"})
    send(live_stack, [event])
    assert send(live_stack, [event]).json()["duplicates"] == 1
    live_stack.depict.wait_for(1)
    live_stack.commerce.wait_for(1)
    marker = make_event("click")
    send(live_stack, [marker])
    live_stack.depict.wait_for(lambda rs: marker["id"] in live_stack.depict.event_ids())
    assert live_stack.depict.event_ids().count(event["id"]) == 1


def test_a_500_is_retried_until_the_vendor_recovers(live_stack):
    """Two 500s from Commerce, then success: the event arrives, once."""
    live_stack.commerce.fail_next(2, 500)
    event = make_event("User Login", account_id="acc_1")
    send(live_stack, [event])
    live_stack.commerce.wait_for(1, timeout=20)
    statuses = [r.status for r in live_stack.commerce.requests]
    assert statuses[:2] == [500, 500] and statuses[-1] == 200
    assert live_stack.commerce.duplicates() == []


def test_a_401_goes_to_the_dead_letters_and_other_sites_keep_flowing(live_stack):
    """other_store's wrong key dead-letters its events; test_store's events still arrive."""
    from redis import Redis

    from worker.dead_letters import DeadLetters

    lost = make_event("User Login")
    send(live_stack, [lost], site=OTHER_SITE)
    fine = make_event("User Login")
    send(live_stack, [fine])
    live_stack.commerce.wait_for(1)
    dead = DeadLetters(Redis.from_url(live_stack.redis_url))
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(l.delivery["event_ids"] == [lost["id"]] for l in dead):
        time.sleep(0.1)
    [letter] = [l for l in dead if l.delivery["event_ids"] == [lost["id"]]]
    assert letter.status == 401 and letter.delivery["site"] == OTHER_SITE
    assert "wrong-key" not in letter.answer


def test_a_browser_order_of_100_products_is_delivered_whole(live_stack):
    """An Order Completed of 100 products from a Segment browser client reaches Depict as 100 purchases and
    Commerce as 100 Web Events, each once (before, the order counted as 100 Web Events in its request and was refused)."""
    from tests.conftest import BROWSER_WRITE_KEY
    from tests.factories import make_segment_message

    products = [{"product_id": f"P{n}", "price": n} for n in range(100)]
    order = make_segment_message(event="Order Completed", properties={"order_id": "o-100", "currency": "USD", "products": products})
    answer = httpx.post(f"{live_stack.url}/v1/track", json={**order, "writeKey": BROWSER_WRITE_KEY}, headers=BROWSER_HEADERS, timeout=10)
    assert answer.status_code == 200 and answer.json()["accepted"] == 100, answer.text
    live_stack.depict.wait_for(lambda _: len(live_stack.depict.event_ids()) >= 100, timeout=30)
    live_stack.commerce.wait_for(100, timeout=30)
    assert sorted(live_stack.depict.event_ids()) == sorted(set(live_stack.depict.event_ids())) and len(live_stack.depict.event_ids()) == 100
    assert len(live_stack.commerce.event_ids()) == 100 and live_stack.commerce.duplicates() == []
    assert all(request.spec_errors == [] for request in live_stack.depict.requests + live_stack.commerce.requests)
