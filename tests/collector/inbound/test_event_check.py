"""The compiled fast check never accepts what Marshmallow would refuse or load differently."""

from __future__ import annotations

import pytest

from collector.inbound.event_check import _is_well_formed, check_events
from collector.inbound.schema import load_events
from tests.factories import make_event

ACCOUNT = {"name": "Acme", "primaryEmail": "buyer@acme.example"}

CASES = {
    "typical page view": make_event(props={"product_id": "KEY-1", "entity_price": "129.90", "currency": "SEK"}),
    "no props": make_event(),
    "nulls where allowed": make_event(user_id=None, url=None, document_width=None),
    "every list and map prop": make_event(props={"variant_ids": ["v1", "v2"], "entity_identifiers": {"sku": "1"}}),
    "price sent as a number": make_event(props={"entity_price": 129.9}),
    "width as a float": make_event(document_width=1280.0),
    "width as a string": make_event(document_width="1280"),
    "ts as a boolean": make_event(ts=True),
    "ts as a float": make_event(ts=1.5),
    "negative ts": make_event(ts=-1),
    "unknown field": make_event(colour="red"),
    "unknown prop": make_event(props={"colour": "red"}),
    "props null": make_event(props=None),
    "id too short": make_event(id="abc"),
    "id with a newline": make_event(id="abcdefgh\n"),
    "empty type": make_event(event_type=""),
    "51 identifiers": make_event(props={"entity_identifiers": {f"k{i}": "v" for i in range(51)}}),
    "identifier value a number": make_event(props={"entity_identifiers": {"sku": 1}}),
    "variant id a number": make_event(props={"variant_ids": [1]}),
    "too long a url": make_event(url="https://shop.example/" + "x" * 2048),
    "account object": make_event("User Login", props={"account": ACCOUNT}),
    "account with a bad e-mail": make_event("User Login", props={"account": {"primaryEmail": "nope"}}),
}


@pytest.mark.parametrize("name", CASES)
def test_fast_check_and_marshmallow_give_the_same_events_and_reasons(name):
    batch = [CASES[name], make_event()]
    assert check_events(batch) == load_events(batch)


def test_a_well_formed_batch_skips_marshmallow():
    """The fast path is taken for what the snippet sends, or it would not pay for itself."""
    assert _is_well_formed([CASES["typical page view"], CASES["no props"], CASES["every list and map prop"]])


@pytest.mark.parametrize("name", ["price sent as a number", "width as a float", "account object", "unknown prop"])
def test_what_marshmallow_converts_or_judges_goes_to_marshmallow(name):
    assert not _is_well_formed([CASES[name]])
