"""Inbound events -> Commerce `NewWebEvent`, and the spec's nested schemas, checked against Commerce's spec."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
from marshmallow import ValidationError

from collector.demo.vendor_spec import VendorSpec
from collector.inbound.enrich import RequestContext
from collector.inbound.schema import load_events
from collector.mapping import commerce_models as models
from collector.mapping.commerce import to_web_event, web_event_id

COMMERCE = VendorSpec.load(Path(__file__).resolve().parents[2] / "specs" / "commerce-webevents.openapi.yaml")
CONTEXT = RequestContext("203.0.113.7", "UA", None, "collect.example", 0.0, "visitor_abcdef12", True)

STATE = {"code": "IL"}
CITY = {"name": "Springfield", "state": STATE}
ADDRESS = {"id": "adr_2kj49d1msod2", "zip": "62704", "city": CITY, "line1": "456 Elm Street", "line2": "Apt 201"}
CONSUMER = {
    "id": "con_2k4jd93vsd82",
    "ssn": "123-45-6789",
    "email": "john.doe@example.com",
    "lastName": "Doe",
    "birthDate": "1984-09-20",
    "firstName": "John",
    "phoneNumber": "555-555-0199",
    "phoneNumbers": ["+1 (555) 555-0199"],
    "addresses": [ADDRESS, "adr_other"],
}
AGENT = {"id": "ai_3jks93ndk3s9", "model": "gpt-4o", "prompt": "Respond", "functions": ["fnc_ed904md03684"]}
CREDIT_BAND = {"id": "crb_39fjkd93nmd0", "name": "Good", "isNS": False, "isPrime": True, "isUnknown": False, "minimumCreditScore": 600, "maximumCreditScore": 700}
TEMPLATE = {"id": "tmp_39fjkd93nmd0", "type": "Email", "subject": "Invoice", "messageText": "Hello"}
SALES_REP = {
    "id": "srep_8f9v2j1kd92j",
    "firstName": "Alice",
    "lastName": "Smith",
    "agent": AGENT,
    "address": ADDRESS,
    "emails": ["sales.rep@example.com"],
    "primaryEmail": "sales.rep@example.com",
    "phoneNumbers": ["+1-555-555-0123"],
    "primaryPhoneNumber": "+1-555-555-0123",
    "roles": ["sales"],
    "creditBands": [CREDIT_BAND, "crb_x"],
    "templates": [TEMPLATE],
    "isAcceptingNewLeads": True,
}
VEHICLE_SPEC = {
    "id": "vs_4jf8x9jv5c0b", "make": "Toyota", "year": 2022, "trim": "SE", "model": "Camry", "engine": "2.5L",
    "squishVin": "4T1BF1FK5H", "bodyStyle": "Sedan", "drivetrain": "FWD", "transmission": "Automatic",
    "exteriorColors": ["Black"], "interiorColors": ["Gray"],
}
VEHICLE = {
    "vin": "1C4HJXEN5MW592818", "year": 2021, "make": "Jeep", "trim": "Sport", "spec": VEHICLE_SPEC, "model": "Wrangler",
    "engine": "3.6L V6", "seatCount": 5, "doorCount": 4, "bodyStyle": "SUV", "drivetrain": "4WD",
    "transmission": "Automatic", "interiorColor": "Black", "exteriorColor": "Red",
}
LEAD = {
    "id": "led_3k2jd9s8v2s4", "email": "contact@example.com", "salesRep": SALES_REP, "consumer": CONSUMER,
    "favorites": [VEHICLE, "vin_x"], "phoneNumber": "555-555-6789", "acceptsGeneratedMessages": True,
}
ACCOUNT = {"id": "acc_0jk3v58djsi1", "lead": LEAD, "consumer": CONSUMER, "anonymousIds": ["anon_4598kdjv9390"]}

OBJECTS = [
    ("State", models.StateSchema, STATE),
    ("City", models.CitySchema, CITY),
    ("Address", models.AddressSchema, ADDRESS),
    ("Consumer", models.ConsumerSchema, CONSUMER),
    ("Agent", models.AgentSchema, AGENT),
    ("CreditBand", models.CreditBandSchema, CREDIT_BAND),
    ("Template", models.TemplateSchema, TEMPLATE),
    ("SalesRep", models.SalesRepSchema, SALES_REP),
    ("VehicleSpec", models.VehicleSpecSchema, VEHICLE_SPEC),
    ("Vehicle", models.VehicleSchema, VEHICLE),
    ("Lead", models.LeadSchema, LEAD),
    ("Account", models.AccountSchema, ACCOUNT),
]


@pytest.mark.parametrize("name, schema, valid", OBJECTS, ids=[o[0] for o in OBJECTS])
def test_a_full_object_loads_dumps_unchanged_and_is_spec_valid(name, schema, valid):
    """Each nested schema round-trips a complete object that the vendor's spec accepts."""
    dumped = schema().dump(schema().load(copy.deepcopy(valid)))
    assert dumped == valid
    assert COMMERCE.component_errors(name, dumped) == []


def required_fields(name: str) -> list[str]:
    return COMMERCE.document["components"]["schemas"][name].get("required", [])


REQUIRED_CASES = [(name, schema, valid, field) for name, schema, valid in OBJECTS for field in required_fields(name)]


@pytest.mark.parametrize("name, schema, valid, field", REQUIRED_CASES, ids=[f"{c[0]}.{c[3]}" for c in REQUIRED_CASES])
def test_each_required_field_of_the_spec_is_required(name, schema, valid, field):
    """Leaving out any field the spec requires is rejected, as the spec rejects it."""
    missing = {key: value for key, value in valid.items() if key != field}
    with pytest.raises(ValidationError) as raised:
        schema().load(missing)
    assert field in raised.value.messages
    assert COMMERCE.component_errors(name, missing) != []


WRONG_TYPES = [
    (models.VehicleSchema, VEHICLE, "year", "2021"),
    (models.VehicleSchema, VEHICLE, "seatCount", -1),
    (models.VehicleSpecSchema, VEHICLE_SPEC, "squishVin", "TOO-SHORT"),
    (models.CreditBandSchema, CREDIT_BAND, "isPrime", "yes"),
    (models.ConsumerSchema, CONSUMER, "birthDate", "1984-13-40"),
    (models.ConsumerSchema, CONSUMER, "email", "not-an-email"),
    (models.AccountSchema, ACCOUNT, "anonymousIds", "anon_1"),
]


@pytest.mark.parametrize("schema, valid, field, value", WRONG_TYPES, ids=[f"{c[2]}={c[3]!r}" for c in WRONG_TYPES])
def test_wrong_types_and_formats_are_rejected(schema, valid, field, value):
    """Values of the wrong type or format are named in the errors."""
    with pytest.raises(ValidationError) as raised:
        schema().load({**valid, field: value})
    assert field in raised.value.messages


@pytest.mark.parametrize("phone, valid", [("555-0199", False), ("555-555-0199", True), ("+1 (555) 555-0199", True), ("5555550199", True)])
def test_phone_numbers_follow_the_spec_pattern_not_its_examples(phone, valid):
    """The spec's own example '555-0199' fails its pattern; we agree with the pattern."""
    consumer = {**CONSUMER, "phoneNumber": phone}
    spec_ok = COMMERCE.component_errors("Consumer", consumer) == []
    try:
        models.ConsumerSchema().load(consumer)
        ours_ok = True
    except ValidationError:
        ours_ok = False
    assert spec_ok is valid and ours_ok is valid


@pytest.mark.parametrize("value, ok", [("acc_x", True), ({"id": "acc_x"}, True), (42, False), (["acc_x"], False)])
def test_an_account_is_an_id_or_an_object(value, ok):
    """IdOr takes the spec's oneOf: a string id or the object."""
    field = models.IdOr(models.AccountSchema)
    if ok:
        assert field.deserialize(value) == value
    else:
        with pytest.raises(ValidationError, match="must be an id"):
            field.deserialize(value)


def test_unknown_fields_are_rejected():
    """A field the spec does not declare is refused."""
    with pytest.raises(ValidationError) as raised:
        models.AccountSchema().load({"id": "acc_1", "nickname": "x"})
    assert raised.value.messages == {"nickname": ["Unknown field."]}


def test_personal_values_never_appear_in_error_messages():
    """Errors name the broken rule, never the SSN, phone or e-mail that broke it."""
    consumer = {**CONSUMER, "ssn": 123456789, "phoneNumber": "555-0199", "email": "john@", "birthDate": "1984-09-99"}
    with pytest.raises(ValidationError) as raised:
        models.AccountSchema().load({"id": "acc_1", "consumer": consumer})
    text = str(raised.value.messages)
    for value in ("123456789", "555-0199", "john@", "1984-09-99"):
        assert value not in text


def web_event_for(**fields):
    event = {"id": "evt_0123456789", "type": "User Login", **fields}
    loaded, rejected = load_events([event])
    assert not rejected, rejected
    return to_web_event("my_store", loaded[0], CONTEXT)


MAPPINGS = [
    ("anonymous", {}, None),
    ("identified account id", {"account_id": "acc_0jk3v58djsi1"}, "acc_0jk3v58djsi1"),
    ("account object", {"props": {"account": ACCOUNT}}, ACCOUNT),
    ("object wins over id", {"account_id": "acc_other", "props": {"account": {"id": "acc_0jk3v58djsi1"}}}, {"id": "acc_0jk3v58djsi1"}),
]


@pytest.mark.parametrize("name, fields, account", MAPPINGS, ids=[m[0] for m in MAPPINGS])
def test_web_events_map_with_and_without_an_identified_account(name, fields, account):
    """A Web Event carries name, anonymousId, a derived id and the account when known; spec-valid."""
    web_event = web_event_for(**fields)
    assert COMMERCE.body_errors("/webevents", web_event) == []
    assert web_event["name"] == "User Login"
    assert web_event["anonymousId"] == "visitor_abcdef12"
    assert re.fullmatch(r"wev_[0-9a-z]{12}", web_event["id"])
    if account is None:
        assert "account" not in web_event
    else:
        assert web_event["account"] == account


def test_the_web_event_id_is_stable_per_site_and_event():
    """A retried or replayed delivery carries the same id; another site's event does not collide."""
    assert web_event_id("my_store", "evt_1") == web_event_id("my_store", "evt_1")
    assert web_event_id("my_store", "evt_1") != web_event_id("my_store", "evt_2")
    assert web_event_id("my_store", "evt_1") != web_event_id("other_store", "evt_1")
