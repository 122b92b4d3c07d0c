"""What a site decides about /collect: who may read answers, privacy, what a browser may send and spend."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from flask import Flask, request

from collector import create_app
from collector.config.schema import SiteLimits
from collector.extensions import client_address_key
from tests.collector.inbound.test_collect import nothing_queued, post, queued
from tests.conftest import CONSENT_SITE, ORIGIN, OTHER_SITE, SITE
from tests.factories import make_event

SSN = "123-45-6789"
PERSONAL_ACCOUNT = {
    "id": "acc_1",
    "consumer": {"id": "con_1", "ssn": SSN, "birthDate": "1990-01-01", "email": "a@b.example", "firstName": "A", "lastName": "B", "phoneNumber": "5555550199"},
}


def test_a_foreign_origin_gets_no_cors_grant(client, redis_client):
    """An origin no site lists is refused, and neither the answer nor its preflight grants it anything."""
    for origin in ("https://evil.example", "null"):
        response = post(client, {"site": SITE, "events": [make_event()]}, Origin=origin)
        assert response.status_code == 403
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Credentials" not in response.headers
        preflight = client.options("/collect", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert "Access-Control-Allow-Origin" not in preflight.headers
    assert nothing_queued(redis_client)


def test_a_listed_origin_gets_its_preflight_granted(client):
    """The site's own pages may send with credentials and read Retry-After."""
    preflight = client.options("/collect", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"


def test_gpc_sets_no_cookie_and_queues_nothing(client, redis_client):
    """With Global Privacy Control the visitor gets no cookie and nothing leaves."""
    response = post(client, {"site": SITE, "events": [make_event()]}, **{"Sec-GPC": "1"})
    assert response.status_code == 202 and response.json["dropped_for_privacy"] == 1
    assert "Set-Cookie" not in response.headers
    assert nothing_queued(redis_client)


def test_consent_is_enforced_on_the_server(client, redis_client):
    """A site that requires consent drops events the snippet did not mark as consented, and counts them."""
    refused = post(client, {"site": CONSENT_SITE, "events": [make_event("User Login")]})
    assert refused.status_code == 202 and refused.json == {"accepted": 0, "duplicates": 0, "rejected": [], "dropped_for_privacy": 1}
    assert "Set-Cookie" not in refused.headers
    assert nothing_queued(redis_client)
    assert 'collector_events_total{outcome="dropped_for_privacy",site="consent_store"}' in client.get("/metrics").get_data(as_text=True)
    given = post(client, {"site": CONSENT_SITE, "consent": True, "events": [make_event("User Login")]})
    assert given.status_code == 202 and given.json["accepted"] == 1
    assert "Set-Cookie" in given.headers
    assert len(queued(redis_client, site=CONSENT_SITE, destination="commerce")) == 1


def test_an_all_duplicate_answer_sets_no_cookie(client):
    """Only a batch that queued something sets (and so renews) the visitor cookie."""
    event = make_event()
    assert "Set-Cookie" in post(client, {"site": SITE, "events": [event]}).headers
    again = post(client, {"site": SITE, "events": [event]})
    assert again.json["duplicates"] == 1 and "Set-Cookie" not in again.headers


@pytest.fixture
def proxied_client(site_config, redis_url):
    """The app behind one trusted proxy hop that terminates TLS."""
    settings = replace(site_config.settings, trusted_proxy_hops=1)
    app = create_app({"COLLECTOR_CONFIG": replace(site_config, settings=settings), "REDIS_URL": redis_url, "TESTING": True})
    return app.test_client()


def test_the_cookie_is_secure_when_the_visitor_used_https(proxied_client):
    """Behind a trusted TLS proxy (X-Forwarded-Proto: https) the cookie is Secure; over plain http it is not."""
    https = post(proxied_client, {"site": SITE, "events": [make_event()]}, **{"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert "Secure" in https.headers["Set-Cookie"]
    plain = post(proxied_client, {"site": SITE, "events": [make_event()]}, **{"X-Forwarded-Proto": "http", "X-Forwarded-For": "203.0.113.9"})
    assert "Secure" not in plain.headers["Set-Cookie"]


def test_personal_account_fields_are_refused_by_default(client, redis_client, caplog):
    """With the default allowlist an SSN, a birth date or an e-mail is a 422 naming the field, never its value."""
    response = post(client, {"site": OTHER_SITE, "events": [make_event("User Login", props={"account": PERSONAL_ACCOUNT})]})
    assert response.status_code == 422
    errors = response.json["error"]["details"]["rejected"][0]["errors"]["props"]["account"]["consumer"]
    assert {"ssn", "birthDate", "email", "firstName", "lastName", "phoneNumber"} <= set(errors)
    assert "consumer.ssn" in errors["ssn"][0]
    assert SSN not in response.get_data(as_text=True) and SSN not in caplog.text
    assert nothing_queued(redis_client)


@pytest.mark.parametrize(
    "consumer", [{"email": "a@b.example"}, {"id": "con_1", "firstName": "A"}, {"id": "con_1", "ssn": SSN, "phoneNumber": "555"}]
)
def test_the_allowlist_refuses_personal_fields_before_the_schema_asks_for_more(client, redis_client, consumer):
    """A consumer with a few personal fields is refused for those fields, not asked for the others a whole consumer needs."""
    response = post(client, {"site": OTHER_SITE, "events": [make_event("User Login", props={"account": {"id": "acc_1", "consumer": consumer}})]})
    assert response.status_code == 422
    errors = response.json["error"]["details"]["rejected"][0]["errors"]["props"]["account"]["consumer"]
    refused = {name for name in consumer if name != "id"}
    assert set(errors) == refused, errors
    assert all("not accepted from a browser" in errors[name][0] for name in refused)
    assert "Missing data" not in response.get_data(as_text=True) and SSN not in response.get_data(as_text=True)
    assert nothing_queued(redis_client)


def test_an_allowlist_refusal_keeps_the_batchs_order_and_its_other_events(client, redis_client):
    """Events refused by the allowlist and by the schema are named by their own index; the valid ones are queued."""
    personal = make_event("User Login", props={"account": {"id": "acc_1", "consumer": {"email": "a@b.example"}}})
    events = [make_event("User Login"), personal, {"id": "x", "type": "page_view"}, make_event("User Login")]
    response = post(client, {"site": OTHER_SITE, "events": events})
    assert response.status_code == 202 and response.json["accepted"] == 2
    assert [(item["index"], item["id"]) for item in response.json["rejected"]] == [(1, personal["id"]), (2, "x")]
    assert "consumer" in response.json["rejected"][0]["errors"]["props"]["account"]


def test_a_field_commerce_does_not_have_is_the_schemas_unknown_field(client):
    """Only Commerce's own fields can be allowed; any other is refused as unknown, not as "add it to account_fields"."""
    account = {"id": "acc_1", "consumer": {"id": "con_1", "shoeSize": 44}}
    response = post(client, {"site": OTHER_SITE, "events": [make_event("User Login", props={"account": account})]})
    errors = response.json["error"]["details"]["rejected"][0]["errors"]["props"]["account"]["consumer"]
    assert errors["shoeSize"] == ["Unknown field."] and "account_fields" not in response.get_data(as_text=True)


def test_identifiers_of_an_account_pass_by_default(client, redis_client):
    """Account ids, anonymous ids and the ids of a consumer and a lead are what a browser may send by default."""
    account = {"id": "acc_1", "consumer": "con_1", "lead": "led_1", "anonymousIds": ["a1"]}
    response = post(client, {"site": OTHER_SITE, "events": [make_event("User Login", props={"account": account})]})
    assert response.status_code == 202
    [delivery] = queued(redis_client, site=OTHER_SITE, destination="commerce")
    assert delivery["body"]["account"] == account


def test_a_site_may_allow_personal_fields(client, redis_client):
    """A site that lists a consumer's fields (here the whole consumer) forwards them."""
    response = post(client, {"site": SITE, "events": [make_event("User Login", props={"account": PERSONAL_ACCOUNT})]})
    assert response.status_code == 202
    [delivery] = queued(redis_client, destination="commerce")
    assert delivery["body"]["account"]["consumer"]["ssn"] == SSN


def test_too_many_web_events_in_one_request_is_429(client, redis_client):
    """Each Web Event is one Commerce call with the site's key: a request over the budget is refused whole."""
    response = post(client, {"site": OTHER_SITE, "events": [make_event("User Login") for _ in range(11)]})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert response.json["error"]["details"] == {"web_events": 11, "web_events_per_request": 10}
    assert nothing_queued(redis_client)
    only_ten_are_web_events = [make_event("User Login") for _ in range(10)] + [make_event("page_view")]
    assert post(client, {"site": OTHER_SITE, "events": only_ten_are_web_events}).status_code == 202


def _start_clear_of_a_minute_edge() -> None:
    """Budgets count per clock minute: start a test of them where the next minute is seconds away."""
    if time.time() % 60 > 55:
        time.sleep(60.1 - time.time() % 60)


def _app_with_limits(site_config, redis_url, **limits):
    _start_clear_of_a_minute_edge()
    sites = dict(site_config.sites)
    sites[SITE] = replace(sites[SITE], limits=SiteLimits(**limits))
    return create_app({"COLLECTOR_CONFIG": replace(site_config, sites=sites), "REDIS_URL": redis_url, "TESTING": True})


def test_a_visitor_over_the_minute_budget_gets_429(site_config, redis_url, redis_client):
    """A visitor (the server-set cookie) is capped per minute; another visitor at the same address is not held back."""
    app = _app_with_limits(site_config, redis_url, visitor_events_per_minute=5)
    client = app.test_client()
    assert post(client, {"site": SITE, "events": [make_event()]}).status_code == 202  # sets the cookie
    assert post(client, {"site": SITE, "events": [make_event() for _ in range(5)]}).status_code == 202
    before = len(queued(redis_client, destination="commerce"))
    over = post(client, {"site": SITE, "events": [make_event()]})
    assert over.status_code == 429 and "per visitor" in over.json["error"]["message"]
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    assert len(queued(redis_client, destination="commerce")) == before
    other_visitor = app.test_client()
    assert post(other_visitor, {"site": SITE, "events": [make_event()]}).status_code == 202
    assert 'outcome="over_budget"' in client.get("/metrics").get_data(as_text=True)


def test_new_anonymous_ids_without_the_cookie_are_one_visitor_per_address(site_config, redis_url):
    """A page that rotates anonymous ids and drops the cookie is charged to its address: the id it picks names nothing."""
    app = _app_with_limits(site_config, redis_url, visitor_events_per_minute=5)
    for number in range(5):
        assert post(app.test_client(), {"site": SITE, "events": [make_event(anonymous_id=f"visitor_rot{number:04d}")]}).status_code == 202
    over = post(app.test_client(), {"site": SITE, "events": [make_event(anonymous_id="visitor_rot9999")]})
    assert over.status_code == 429 and "per visitor" in over.json["error"]["message"]


def test_one_address_spends_at_most_its_share_of_the_site_budget(site_config, redis_url):
    """With address_share 0.5 of 4 events a minute, one address (whatever cookies it sends) gets 2; another address still gets in."""
    app = _app_with_limits(site_config, redis_url, events_per_minute=4, address_share=0.5)
    for _ in range(2):
        assert post(app.test_client(), {"site": SITE, "events": [make_event()]}).status_code == 202
    over = post(app.test_client(), {"site": SITE, "events": [make_event()]})
    assert over.status_code == 429 and "per client address" in over.json["error"]["message"]
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    assert post(elsewhere, {"site": SITE, "events": [make_event()]}).status_code == 202


def test_the_site_over_its_minute_budget_gets_429(site_config, redis_url):
    """A site's events per minute are capped across all its visitors (here all at one address, allowed the whole budget)."""
    app = _app_with_limits(site_config, redis_url, events_per_minute=3, address_share=1.0)
    for visitor in ("visitor_aaaa1", "visitor_bbbb2", "visitor_cccc3"):
        assert post(app.test_client(), {"site": SITE, "events": [make_event(anonymous_id=visitor)]}).status_code == 202
    over = post(app.test_client(), {"site": SITE, "events": [make_event(anonymous_id="visitor_dddd4")]})
    assert over.status_code == 429 and "for the whole site" in over.json["error"]["message"]


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
    ],
)
def test_the_rate_limit_keys_ipv6_clients_by_their_64(address, key):
    """Every address of one IPv6 /64 shares one rate-limit counter."""
    app = Flask(__name__)
    with app.test_request_context(environ_base={"REMOTE_ADDR": address}):
        assert request.remote_addr == address
        assert client_address_key() == key
