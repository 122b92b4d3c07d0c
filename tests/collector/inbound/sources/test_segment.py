"""Segment's messages -> our inbound events: what each call becomes at Depict and Commerce."""

from __future__ import annotations

import pytest

from collector.config import defaults
from collector.inbound.event_check import check_events
from collector.inbound.sources.segment import event_id_for, inbound_events, load_messages

RECEIVED_AT = 1_796_000_000.0
ANONYMOUS_ID = "1b7c0b4e-8a1e-4e9a-9e52-6a4c3f1f0f11"


def message(call: str = "track", **fields) -> dict:
    base = {"type": call, "messageId": f"ajs-next-{call}-0001", "anonymousId": ANONYMOUS_ID,
            "context": {"page": {"url": "https://shop.example/p/1", "referrer": "https://search.example/"}}}  # fmt: skip
    return {**base, **fields}


def converted(raw: dict, event_types=defaults.SOURCE_EVENT_TYPES) -> list[dict]:
    """The message loaded, converted, and checked by /collect's own inbound schema (which must accept it)."""
    messages, errors = load_messages([raw])
    assert not errors, errors
    events, rejected = check_events(inbound_events(messages[0], event_types, RECEIVED_AT))
    assert not rejected, rejected
    return events


def test_product_viewed_is_a_page_view_of_that_product():
    [event] = converted(message(event="Product Viewed", properties={"product_id": "P-1", "price": 12.5, "currency": "SEK"}))
    assert event["type"] == "page_view"
    assert event["props"] == {"product_id": "P-1", "entity_price": "12.5", "currency": "SEK"}
    assert event["url"] == "https://shop.example/p/1" and event["document_referrer"] == "https://search.example/"
    assert event["id"] == "ajs-next-track-0001" and event["anonymous_id"] == ANONYMOUS_ID


def test_product_clicked_is_a_click_only_with_a_recommendation_id():
    [click] = converted(message(event="Product Clicked", properties={"product_id": "P-1", "recommendation_id": "rec-9"}))
    assert click["type"] == "click" and click["props"]["recommendation_id"] == "rec-9"
    [plain] = converted(message(event="Product Clicked", properties={"product_id": "P-1"}))
    assert plain["type"] == "Product Clicked", "without a recommendation it is a Web Event only"


def test_product_added_is_an_add_to_cart_and_sku_stands_in_for_the_product_id():
    [event] = converted(message(event="Product Added", properties={"sku": "SKU-7", "quantity": 2}))
    assert event["type"] == "add_to_cart" and event["props"] == {"product_id": "SKU-7"}


def test_order_completed_is_one_purchase_per_product_with_the_orders_currency():
    products = [{"product_id": "A", "price": 10}, {"product_id": "B", "price": 20, "quantity": 3}]
    events = converted(message(event="Order Completed", properties={"order_id": "o-1", "currency": "EUR", "products": products}))
    assert [(e["type"], e["props"]["product_id"], e["props"]["entity_price"], e["props"]["currency"]) for e in events] == [
        ("purchase", "A", "10", "EUR"),
        ("purchase", "B", "20", "EUR"),
    ]
    assert [e["id"] for e in events] == ["ajs-next-track-0001", "ajs-next-track-0001_1"], "stable ids: a resent order dedupes"


def test_an_order_of_too_many_products_is_refused():
    products = [{"product_id": str(n)} for n in range(defaults.MAX_ORDER_PRODUCTS + 1)]
    messages, _ = load_messages([message(event="Order Completed", properties={"products": products})])
    with pytest.raises(Exception, match="at most"):
        inbound_events(messages[0], defaults.SOURCE_EVENT_TYPES, RECEIVED_AT)


def test_other_track_names_stay_web_events_of_that_name():
    [event] = converted(message(event="Newsletter Signup", properties={"product_id": "P-1"}))
    assert event["type"] == "Newsletter Signup" and event["props"] == {}


def test_a_sites_table_adds_and_removes_mappings():
    table = {"Wishlist Added": "add_to_cart"}
    [added] = converted(message(event="Wishlist Added", properties={"product_id": "P-2"}), table)
    assert added["type"] == "add_to_cart"
    [unmapped] = converted(message(event="Product Added", properties={"product_id": "P-2"}), table)
    assert unmapped["type"] == "Product Added"


def test_a_page_call_is_a_page_view_of_the_page():
    [event] = converted(message("page", name="Home", context={}, properties={"url": "https://shop.example/", "referrer": "https://a.example/"}))
    assert event["type"] == "page_view" and event["url"] == "https://shop.example/"
    assert event["document_referrer"] == "https://a.example/"


def test_identify_is_a_web_event_with_the_user_as_account():
    traits = {"email": "a@example.com", "consumer": "con_1"}
    [event] = converted(message("identify", userId="user-1", traits=traits))
    assert event["type"] == "Identify"
    assert event["props"]["account"] == {"id": "user-1", "anonymousIds": [ANONYMOUS_ID], "consumer": "con_1"}
    assert "email" not in str(event), "Segment traits that are not Account fields are not forwarded"


def test_group_and_alias_name_their_accounts():
    [group] = converted(message("group", groupId="company-9", userId="user-1"))
    assert (group["type"], group["props"]["account"]) == ("Group", {"id": "company-9"})
    [alias] = converted(message("alias", userId="user-1", previousId="anon-42"))
    assert (alias["type"], alias["props"]["account"]) == ("Alias", {"id": "user-1", "anonymousIds": ["anon-42"]})


def test_the_client_clock_is_corrected_by_sent_at():
    raw = message(event="X", timestamp="2026-12-02T03:00:00.000Z", sentAt="2026-12-02T03:00:10.000Z")
    messages, _ = load_messages([raw])
    [event] = inbound_events(messages[0], {}, received_at=1_796_180_410.0 + 5)  # received 5 s after its sentAt
    assert event["ts"] == 1_796_180_400_000 + 5_000


def test_the_screen_width_is_the_document_width():
    [event] = converted(message(event="X", context={"screen": {"width": 1920, "innerWidth": 1280}}))
    assert event["document_width"] == 1280


def test_a_message_id_that_is_not_an_id_is_replaced_by_a_stable_digest():
    assert event_id_for("ajs-next-0123abcd", {}) == "ajs-next-0123abcd"
    replaced = event_id_for("order:42/2026", {})
    assert replaced == event_id_for("order:42/2026", {}) and replaced.startswith("m_") and len(replaced) == 34
    assert event_id_for(None, {"a": 1}) == event_id_for(None, {"a": 1}) != event_id_for(None, {"a": 2})


def test_bad_messages_are_named_by_index_with_reasons():
    big = message(event="Big", properties={"text": "x" * defaults.MAX_SOURCE_MESSAGE_BYTES})
    raw = [message(event="Fine"), "not an object", message(event=""), message(anonymousId=None, event="No one"), big,
           message("alias", userId="u")]  # fmt: skip
    messages, errors = load_messages(raw)
    assert list(messages) == [0]
    assert errors[1] == {"_schema": ["a message must be a JSON object"]}
    assert "event" in errors[2] and "anonymousId" in errors[3] and "previousId" in errors[5]
    assert errors[4] == {"_schema": ["a message may be at most 32 KB"]}


def test_numbers_as_ids_are_accepted_as_text():
    messages, errors = load_messages([message(event="X", userId=42, anonymousId=None)])
    assert not errors and messages[0]["userId"] == "42"
