"""POST /collect: what a browser gets back, and what lands in Redis."""

from __future__ import annotations

import json

import pytest

from collector.storage.outbox import decode_entry, outbox_key
from tests.conftest import ORIGIN, OTHER_SITE, SITE
from tests.factories import make_event


def post(client, body, content_type="text/plain", **headers):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post("/collect", data=data, content_type=content_type, headers={"Origin": ORIGIN, **headers})


def queued(redis_client, site=SITE, destination="depict") -> list[dict]:
    """The deliveries waiting in an outbox, in order, out of their compressed entries."""
    return [delivery for entry in redis_client.lrange(outbox_key(site, destination), 0, -1) for delivery in decode_entry(entry)]


def nothing_queued(redis_client) -> bool:
    return not redis_client.keys("collector:outbox:*") and not redis_client.keys("collector:seen:*")


def test_a_beacon_batch_is_accepted_and_queued_for_both_vendors(client, redis_client):
    """A text/plain batch answers 202 and queues one Depict array and one Commerce event each."""
    events = [make_event("page_view"), make_event("add_to_cart", props={"product_id": "KEY-1"}), make_event("User Login")]
    response = post(client, {"site": SITE, "events": events})
    assert response.status_code == 202, response.json
    assert response.json == {"accepted": 3, "duplicates": 0, "rejected": []}
    depict = queued(redis_client)
    assert len(depict) == 1 and [e["type"] for e in depict[0]["body"]] == ["page_view", "add_to_cart"]
    commerce = queued(redis_client, destination="commerce")
    assert [d["body"]["name"] for d in commerce] == ["page_view", "add_to_cart", "User Login"]


def test_json_content_type_is_accepted_too(client):
    """application/json bodies work the same as text/plain ones."""
    response = post(client, {"site": SITE, "events": [make_event()]}, content_type="application/json")
    assert response.status_code == 202


def test_the_visitor_cookie_is_set_http_only_and_lax(client):
    """The answer sets the first-party visitor cookie the way Safari keeps it."""
    response = post(client, {"site": SITE, "events": [make_event(anonymous_id="anon_from_snippet1")]})
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("_cid=anon_from_snippet1;")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Max-Age=" in cookie


def test_the_site_origin_may_read_the_answer(client):
    """CORS answers name the page's origin and allow credentials, so the cookie flows."""
    response = post(client, {"site": SITE, "events": [make_event()]})
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"


def test_a_cross_origin_page_may_read_retry_after(client):
    """The snippet honours Retry-After; a browser shows it to a page on another origin only if exposed."""
    response = post(client, {"site": SITE, "events": [make_event()]})
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]


def test_a_resent_event_is_queued_once(client, redis_client):
    """The same event id from the same site counts as a duplicate the second time."""
    event = make_event("purchase")
    assert post(client, {"site": SITE, "events": [event]}).json["accepted"] == 1
    again = post(client, {"site": SITE, "events": [event, make_event("click")]})
    assert again.status_code == 202
    assert again.json["accepted"] == 1 and again.json["duplicates"] == 1
    ids = [e["deduplication_id"] for d in queued(redis_client) for e in d["body"]]
    assert ids.count(event["id"]) == 1


def test_a_repeated_id_within_one_batch_counts_once(client, redis_client):
    """Two copies of one event in a batch are one delivery."""
    event = make_event()
    response = post(client, {"site": SITE, "events": [event, event]})
    assert response.json["accepted"] == 1 and response.json["duplicates"] == 1


def test_one_bad_event_is_reported_and_the_good_ones_queued(client, redis_client):
    """A partly bad batch queues the good events and says, by index, why the bad one failed."""
    bad = make_event(document_width="wide")
    response = post(client, {"site": SITE, "events": [make_event(), bad]})
    assert response.status_code == 202
    assert response.json["accepted"] == 1
    assert response.json["rejected"] == [{"index": 1, "id": bad["id"], "errors": {"document_width": ["Not a valid integer."]}}]


def test_routing_sends_only_configured_types(client, redis_client):
    """other_store routes only 'User Login' to Commerce and has no Depict."""
    response = post(client, {"site": OTHER_SITE, "events": [make_event("page_view"), make_event("User Login")]})
    assert response.status_code == 202
    assert queued(redis_client, OTHER_SITE, "depict") == []
    assert [d["body"]["name"] for d in queued(redis_client, OTHER_SITE, "commerce")] == ["User Login"]


BAD_REQUESTS = [
    ("not json", "{not json", 400, "the body is not JSON"),
    ("empty body", "", 400, "the body is empty"),
    ("json array", [], 400, "the request is not a batch of events"),
    ("no site", {"events": [{"id": "abcdefgh", "type": "click"}]}, 400, "the request is not a batch of events"),
    ("empty batch", {"site": SITE, "events": []}, 400, "the request is not a batch of events"),
    ("events not a list", {"site": SITE, "events": "click"}, 400, "the request is not a batch of events"),
    ("unknown site", {"site": "nobody", "events": [{"id": "abcdefgh", "type": "click"}]}, 400, "unknown site 'nobody'"),
    ("too many events", {"site": SITE, "events": [{"id": f"id{i:08d}", "type": "click"} for i in range(51)]}, 400, "the request is not a batch of events"),
]


@pytest.mark.parametrize("name, body, status, message", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_unusable_requests_get_a_json_reason_and_queue_nothing(client, redis_client, name, body, status, message):
    """The whole request is refused with a JSON reason; nothing reaches Redis."""
    response = post(client, body)
    assert response.status_code == status
    assert response.json["error"]["code"] == status
    assert message in response.json["error"]["message"]
    assert nothing_queued(redis_client)


BAD_EVENTS = [
    ("no id", {"type": "click"}, "id", "Missing data for required field."),
    ("short id", {"id": "abc", "type": "click"}, "id", "must be 8-64 characters"),
    ("no type", {"id": "abcdefgh"}, "type", "Missing data for required field."),
    ("type not a string", {"id": "abcdefgh", "type": 7}, "type", "Not a valid string."),
    ("unknown top-level field", {"id": "abcdefgh", "type": "click", "email": "a@b.c"}, "email", "Unknown field."),
    ("unknown prop", {"id": "abcdefgh", "type": "click", "props": {"colour": "red"}}, "props", "Unknown field."),
    ("variant_ids not a list", {"id": "abcdefgh", "type": "click", "props": {"variant_ids": "v1"}}, "props", "Not a valid list."),
    ("width negative", {"id": "abcdefgh", "type": "click", "document_width": -5}, "document_width", "greater than or equal to 0"),
    ("bad account phone", {"id": "abcdefgh", "type": "Lead Form", "props": {"account": {"id": "acc_1", "lead": {"id": "led_1", "email": "x@y.z", "phoneNumber": "555-0199"}}}}, "props", ""),
]


@pytest.mark.parametrize("name, event, field, message", BAD_EVENTS, ids=[case[0] for case in BAD_EVENTS])
def test_a_batch_of_only_bad_events_is_422_and_queues_nothing(client, redis_client, name, event, field, message):
    """Every event invalid: 422 with per-event reasons keyed by field; nothing queued."""
    response = post(client, {"site": SITE, "events": [event]})
    assert response.status_code == 422
    rejected = response.json["error"]["details"]["rejected"]
    assert rejected[0]["index"] == 0 and field in rejected[0]["errors"]
    assert message in json.dumps(rejected[0]["errors"][field])
    assert nothing_queued(redis_client)


def test_personal_values_are_not_echoed_in_errors(client):
    """A rejected SSN is named as a field problem, its value never repeated back or logged."""
    account = {"id": "acc_1", "consumer": {"id": "con_1", "ssn": "123-45-6789", "firstName": "J"}}
    response = post(client, {"site": SITE, "events": [{"id": "abcdefgh", "type": "Lead", "props": {"account": account}}]})
    assert response.status_code == 422
    assert "123-45-6789" not in response.get_data(as_text=True)


def test_an_origin_not_configured_for_the_site_is_refused(client, redis_client):
    """Pages of other origins cannot send events for a site that lists its origins."""
    response = post(client, {"site": SITE, "events": [make_event()]}, Origin="https://evil.example")
    assert response.status_code == 403
    assert "not configured" in response.json["error"]["message"]
    assert nothing_queued(redis_client)


def test_a_body_over_the_limit_is_413(client, redis_client):
    """Bodies over 64 KiB are refused before they are parsed."""
    response = post(client, {"site": SITE, "events": [make_event(url="https://x.example/" + "a" * 70_000)]})
    assert response.status_code == 413
    assert response.json["error"]["code"] == 413
    assert nothing_queued(redis_client)


def test_global_privacy_control_drops_events_for_sites_that_honour_it(client, redis_client):
    """With Sec-GPC: 1 the events are acknowledged but not forwarded."""
    response = post(client, {"site": SITE, "events": [make_event()]}, **{"Sec-GPC": "1"})
    assert response.status_code == 202
    assert response.json["accepted"] == 0 and response.json["dropped_for_privacy"] == 1
    assert nothing_queued(redis_client)


def test_site_settings_tell_the_snippet_the_privacy_policy(client):
    """The snippet learns whether it must wait for consent."""
    response = client.get(f"/sites/{SITE}/settings.json")
    assert response.json == {"require_consent": False, "honor_gpc": True}
    assert client.get("/sites/nobody/settings.json").status_code == 400


def test_openapi_document_describes_collect_from_the_same_schemas(client):
    """/openapi.json is generated from the inbound Marshmallow schemas."""
    document = client.get("/openapi.json").json
    assert document["openapi"].startswith("3.1")
    event = document["components"]["schemas"]["InboundEvent"]
    assert set(event["required"]) == {"id", "type"}
    assert "product_id" in document["components"]["schemas"]["EventProps"]["properties"]
    assert "/collect" in document["paths"]


@pytest.mark.parametrize(
    "name, props",
    [
        ("typical", {"product_id": "KEY-1", "entity_price": "100", "variant_ids": ["v1"]}),
        ("50 identifiers", {"entity_identifiers": {f"k{i}": "v" for i in range(50)}}),
        ("51 identifiers", {"entity_identifiers": {f"k{i}": "v" for i in range(51)}}),
        ("unknown prop", {"colour": "red"}),
        ("too long a product id", {"product_id": "x" * 257}),
    ],
)
def test_the_published_schema_accepts_exactly_what_collect_accepts(client, name, props):
    """A client validating against /openapi.json agrees with /collect on each event."""
    from jsonschema import Draft202012Validator

    document = client.get("/openapi.json").json
    validator = Draft202012Validator({"$ref": "#/components/schemas/InboundEvent", "components": document["components"]})
    event = make_event("add_to_cart", props=props)
    accepted_by_collect = post(client, {"site": SITE, "events": [event]}).status_code == 202
    assert validator.is_valid(event) == accepted_by_collect


def test_health_and_readiness(client):
    """/healthz answers; /readyz checks Redis."""
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json["redis"] == "ok"


def test_metrics_count_accepted_events(client):
    """/metrics exposes Prometheus counters of what /collect did."""
    post(client, {"site": SITE, "events": [make_event()]})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'collector_events_total{outcome="accepted",site="test_store"}' in text
    assert 'collector_outbox_entries{outbox="collector:outbox:test_store:commerce"} 1.0' in text


@pytest.fixture
def app_without_redis(site_config):
    from collector import create_app
    from collector.storage.redis_server import free_port

    return create_app({"COLLECTOR_CONFIG": site_config, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})


def test_redis_down_is_503_with_retry_after_not_500(app_without_redis):
    """When Redis is unreachable, /collect says retry later, /readyz fails, /healthz still answers."""
    client = app_without_redis.test_client()
    response = post(client, {"site": SITE, "events": [make_event()]})
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "retry later" in response.json["error"]["message"]
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


@pytest.fixture
def strictly_limited_client(site_config, redis_url):
    """An app whose /collect takes 3 requests a minute from one address."""
    from dataclasses import replace

    from collector import create_app

    settings = replace(site_config.settings, rate_limit="3 per minute")
    app = create_app({"COLLECTOR_CONFIG": replace(site_config, settings=settings), "REDIS_URL": redis_url, "TESTING": True})
    return app.test_client()


def test_over_the_rate_limit_is_429_with_retry_after_and_queues_nothing(strictly_limited_client, redis_client):
    """The fourth request in a minute is refused in the usual error shape, with when to come back."""
    for _ in range(3):
        accepted = post(strictly_limited_client, {"site": SITE, "events": [make_event()]})
        assert accepted.status_code == 202
        assert "Retry-After" not in accepted.headers
    before = len(queued(redis_client, destination="commerce"))
    refused = post(strictly_limited_client, {"site": SITE, "events": [make_event()]})
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == 429 and "more than 3 per minute" in refused.json["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert len(queued(redis_client, destination="commerce")) == before
    assert strictly_limited_client.get("/healthz").status_code == 200


def test_an_integer_beyond_64_bits_in_an_account_is_queued_exactly(client, redis_client):
    """Python's JSON reads any integer; the outbox must not lose or round one a page sent."""
    from tests.collector.mapping.test_commerce import LEAD, VEHICLE

    vehicle = dict(VEHICLE, year=10**20)
    account = {"id": "acc_1", "lead": dict(LEAD, favorites=[vehicle])}
    response = post(client, {"site": SITE, "events": [make_event("Lead Form", props={"account": account})]})
    assert response.status_code == 202
    (delivery,) = queued(redis_client, destination="commerce")
    assert delivery["body"]["account"]["lead"]["favorites"][0]["year"] == 10**20


def test_without_a_console_no_live_tail_is_written(client, redis_client):
    """Only the console and the demo read the live tail: a collector without them does not pay for it."""
    assert post(client, {"site": SITE, "events": [make_event()]}).status_code == 202
    assert redis_client.keys("collector:tail:*") == []
