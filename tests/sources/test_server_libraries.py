"""A shop's backend with Segment's and RudderStack's Python libraries, pointed at the collector.

The libraries come from PyPI as a shop installs them (``[test]`` extras); the
collector runs on a real port with a ``collector worker`` and the vendor
stand-ins, which check every request against the vendors' specs. They run
at their default settings: 100 messages a batch, Segment's uncompressed
(up to 475 KB), RudderStack's gzipped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import SERVER_WRITE_KEY, LiveStack

ORDER = {
    "order_id": "order-1001",
    "currency": "SEK",
    "products": [{"product_id": "KB-1", "price": 899, "quantity": 1}, {"product_id": "MS-2", "price": 349, "quantity": 2}],
}
VISITOR = {"ip": "203.0.113.77", "userAgent": "Mozilla/5.0 (the visitor's browser)", "page": {"url": "https://shop.example/checkout"}}
# A product as a shop's backend describes it: about 1 KB, so that 100 of them make a batch of about 110 KB.
PRODUCT = {"name": "Mechanical keyboard, 75 %, hot-swappable", "category": "Keyboards", "price": 899, "currency": "SEK",
           "description": "A solid aluminium case, gasket mount, PBT keycaps. " * 18}  # fmt: skip
CALLS = 1000


def _configured(analytics: Any, **settings: Any) -> Iterator[Any]:
    """A library's module API set as a shop sets it; on the way out it is flushed and its errors must be none."""
    errors: list[Exception] = []
    for name, value in {**settings, "on_error": lambda error, _: errors.append(error)}.items():
        setattr(analytics, name, value)
    analytics.default_client = None
    yield analytics
    analytics.flush()
    analytics.shutdown()
    analytics.default_client = None
    assert not errors, errors


@pytest.fixture
def segment_library(live_stack: LiveStack) -> Iterator[Any]:
    """segment-analytics-python: a write key and a host."""
    import segment.analytics as analytics

    yield from _configured(analytics, write_key=SERVER_WRITE_KEY, host=live_stack.url)


@pytest.fixture
def rudderstack_library(live_stack: LiveStack) -> Iterator[Any]:
    """rudder-sdk-python: a write key and a data plane URL (it gzips its batches by default)."""
    import rudderstack.analytics as analytics

    yield from _configured(analytics, write_key=SERVER_WRITE_KEY, dataPlaneUrl=live_stack.url)


def _purchases(live_stack: LiveStack, count: int) -> list[dict]:
    live_stack.depict.wait_for(lambda _: len(_depict_events(live_stack)) >= count, timeout=20)
    return _depict_events(live_stack)


def _depict_events(live_stack: LiveStack) -> list[dict]:
    return [event for request in live_stack.depict.accepted for event in request.json]


@pytest.mark.parametrize("library", ["segment_library", "rudderstack_library"])
def test_an_order_completed_from_the_backend_arrives_at_depict_as_purchases(library: str, live_stack: LiveStack, request) -> None:
    analytics = request.getfixturevalue(library)
    analytics.track("user-42", "Order Completed", ORDER, context=VISITOR)
    analytics.identify("user-42", {"plan": "gold"}, context=VISITOR)
    analytics.flush()

    purchases = _purchases(live_stack, 2)
    assert [(e["type"], e["product_id"], e["entity_price"], e["currency"], e["user_id"]) for e in purchases] == [
        ("purchase", "KB-1", "899", "SEK", "user-42"),
        ("purchase", "MS-2", "349", "SEK", "user-42"),
    ]
    [depict_request] = live_stack.depict.accepted
    assert depict_request.spec_errors == []
    assert depict_request.headers["x-forwarded-for"] == "203.0.113.77", "the visitor's IP, from the message's context"
    assert depict_request.headers["user-agent"] == "Mozilla/5.0 (the visitor's browser)"
    web_events = live_stack.commerce.wait_for(3, timeout=20)
    assert sorted(r.json["name"] for r in web_events) == ["Identify", "purchase", "purchase"]
    assert all(r.spec_errors == [] for r in web_events)
    assert {r.json.get("account") if isinstance(r.json.get("account"), str) else r.json["account"]["id"] for r in web_events} == {"user-42"}


def test_a_resent_message_id_is_delivered_once(segment_library: Any, live_stack: LiveStack) -> None:
    message_id = str(uuid.uuid4())
    for _ in range(2):
        segment_library.track("user-43", "Product Added", {"product_id": "KB-1"}, context=VISITOR, message_id=message_id)
        segment_library.flush()
    live_stack.commerce.wait_for(1, timeout=20)
    live_stack.depict.wait_for(1, timeout=20)
    segment_library.track("user-43", "Marker", {}, context=VISITOR)  # delivered after the resend would have been
    segment_library.flush()
    live_stack.commerce.wait_for(lambda requests: any(r.json["name"] == "Marker" for r in requests), timeout=20)
    assert [e["type"] for e in _depict_events(live_stack)] == ["add_to_cart"]
    assert [r.json["name"] for r in live_stack.commerce.accepted].count("add_to_cart") == 1


@pytest.mark.parametrize("library", ["segment_library", "rudderstack_library"])
def test_a_thousand_tracks_at_the_library_defaults_are_all_delivered(library: str, live_stack: LiveStack, request) -> None:
    """Batches of 100 messages of about 1 KB (past 64 KiB, within Segment's 500 KB) are taken whole, none dropped."""
    message = {"type": "track", "event": "Product Added", "properties": {**PRODUCT, "product_id": "KB-0"}, "context": VISITOR}
    assert 100 * len(json.dumps(message)) > 100 * 1024, "the batches must be larger than /collect's 64 KiB"
    analytics = request.getfixturevalue(library)
    for n in range(CALLS):
        analytics.track(f"user-{n % 40}", "Product Added", {**PRODUCT, "product_id": f"KB-{n}"}, context=VISITOR)
    analytics.flush()

    web_events = live_stack.commerce.wait_for(CALLS, timeout=60)
    assert len(web_events) == CALLS and {r.json["name"] for r in web_events} == {"add_to_cart"}
    live_stack.depict.wait_for(lambda _: len(_depict_events(live_stack)) >= CALLS, timeout=60)
    assert sorted(e["product_id"] for e in _depict_events(live_stack)) == sorted(f"KB-{n}" for n in range(CALLS))
    assert all(r.spec_errors == [] for r in [*live_stack.depict.accepted, *web_events])
