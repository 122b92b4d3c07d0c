"""Inbound events -> Depict `Event`, checked against Depict's own spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config.defaults import DEPICT_EVENT_TYPES
from collector.config.schema import DepictDestination
from collector.demo.vendor_spec import VendorSpec
from collector.inbound.enrich import RequestContext
from collector.inbound.schema import load_events
from collector.mapping.depict import to_depict_event

DEPICT = VendorSpec.load(Path(__file__).resolve().parents[2] / "specs" / "depict-create-events.openapi.yaml")
DESTINATION = DepictDestination(url="https://api.depict.ai/create-events", api_key="k", tenant="my_store", market="us")
CONTEXT = RequestContext(
    client_ip="203.0.113.7",
    user_agent="Mozilla/5.0",
    referer="https://my-store.example/",
    host="collect.my-store.example",
    received_at=0.0,
    visitor_id="visitor_abcdef12",
    visitor_cookie_was_set=True,
)

PROPS_BY_TYPE = {
    "page_view": {"product_id": "KEY-1", "entity_identifiers": {"sku": 31415}, "entity_price": 100, "currency": "USD"},
    "click": {"recommendation_id": "827ada29", "click_location": "landing_page_recommendation_1", "product_id": "KEY-1"},
    "add_to_cart": {"product_id": "KEY-1", "variant_ids": ["KEY-1-red"], "entity_price": "100", "currency": "SEK"},
    "purchase": {"product_id": "KEY-1", "entity_price": "99.5", "currency": "EUR", "attribution_id": "newsletter"},
    "element_visible": {"recommendation_id": "827ada29", "product_id": "KEY-2"},
    "ws_click": {"search_result_id": "sr-1", "product_listing_result_id": "pl-1", "ab_test_group": "b"},
    "recommendations_inserted": {"recommendation_type": "search", "recommendation_id": "827ada29"},
}


def mapped(event: dict) -> dict:
    loaded, rejected = load_events([event])
    assert not rejected, rejected
    return to_depict_event(loaded[0], DESTINATION, CONTEXT)


def inbound(event_type: str, **fields) -> dict:
    event = {
        "id": "evt_0123456789",
        "type": event_type,
        "session_id": "sess-1",
        "url": "https://my-store.example/p/keyboard",
        "document_referrer": "https://www.google.com/",
        "document_width": 1280,
        "props": PROPS_BY_TYPE.get(event_type, {}),
    }
    event.update(fields)
    return event


@pytest.mark.parametrize("event_type", DEPICT_EVENT_TYPES)
def test_every_depict_type_maps_to_a_spec_valid_event(event_type):
    """Each of Depict's seven types becomes an `Event` that Depict's spec accepts."""
    event = mapped(inbound(event_type))
    assert DEPICT.body_errors("/create-events", [event]) == []
    assert event["type"] == event_type
    assert event["tenant"] == "my_store" and event["market"] == "us"
    assert event["deduplication_id"] == "evt_0123456789"
    assert event["session_id"] == "sess-1"
    assert event["document_width"] == "1280"
    for name, value in PROPS_BY_TYPE[event_type].items():
        expected = {k: str(v) for k, v in value.items()} if isinstance(value, dict) else value
        assert event[name] == (str(expected) if isinstance(expected, int) else expected)


def test_user_id_is_the_identified_customer_when_known():
    """After identify, Depict's user_id is the site's customer id."""
    assert mapped(inbound("click", user_id="customer-42"))["user_id"] == "customer-42"


def test_user_id_falls_back_to_the_first_party_visitor_id():
    """Before identify, Depict's user_id is the server-set visitor id."""
    assert mapped(inbound("click"))["user_id"] == "visitor_abcdef12"


def test_absent_fields_are_left_out_not_sent_as_null():
    """A bare event carries only what is known, no nulls."""
    event = mapped({"id": "evt_0123456789", "type": "page_view"})
    assert event == {
        "tenant": "my_store",
        "market": "us",
        "type": "page_view",
        "deduplication_id": "evt_0123456789",
        "user_id": "visitor_abcdef12",
    }


def test_a_product_page_view_carries_page_url():
    """A page_view with a product is a product page: page_url is its URL."""
    assert mapped(inbound("page_view"))["page_url"] == "https://my-store.example/p/keyboard"
    assert "page_url" not in mapped(inbound("click"))


def test_no_field_outside_the_spec_even_with_an_account_in_props():
    """Commerce-only PROPS (account) never leak into Depict's additionalProperties:false object."""
    account = {"id": "acc_0jk3v58djsi1"}
    event = mapped(inbound("purchase", props={"product_id": "KEY-1", "account": account}))
    assert "account" not in event
    assert DEPICT.body_errors("/create-events", [event]) == []
