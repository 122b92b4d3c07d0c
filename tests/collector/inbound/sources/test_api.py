"""``/v1/...``: what Segment's and RudderStack's clients get back, and what lands in Redis."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import json
from dataclasses import replace

import pytest

from collector import create_app
from collector.config.loading import parse_config
from collector.config.schema import SiteLimits
from tests.collector.inbound.test_collect import queued
from tests.conftest import BROWSER_WRITE_KEY, CONSENT_SITE, CONSENT_WRITE_KEY, ORIGIN, SERVER_WRITE_KEY, SITE
from tests.factories import make_segment_message

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) Chrome/156"


def basic(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def send(client, path: str, body, write_key: str | None = BROWSER_WRITE_KEY, auth: str | None = None, **headers):
    """POST as analytics-next does: text/plain JSON with the write key in the body, from the shop's page."""
    if isinstance(body, dict) and write_key is not None:
        body = {**body, "writeKey": write_key}
    data = body if isinstance(body, bytes) else json.dumps(body)
    sent = {"Origin": ORIGIN, "User-Agent": BROWSER_UA, "Content-Type": "text/plain", **headers}
    if auth:
        sent["Authorization"] = auth
    return client.post(path, data=data, headers=sent)


def test_a_track_call_is_accepted_as_segment_answers_and_queued_for_both_vendors(client, redis_client):
    message = make_segment_message(event="Product Viewed", properties={"product_id": "KB-1", "price": 99})
    response = send(client, "/v1/t", message)
    assert response.status_code == 200, response.json
    assert response.json == {"success": True, "accepted": 1, "duplicates": 0, "rejected": []}
    [depict] = queued(redis_client)
    assert depict["body"][0]["type"] == "page_view" and depict["body"][0]["product_id"] == "KB-1"
    assert depict["body"][0]["url"] == "https://shop.example/p/keyboard"
    assert depict["headers"]["User-Agent"] == BROWSER_UA, "a browser's User-Agent comes from the request, not from context"
    [commerce] = queued(redis_client, destination="commerce")
    assert commerce["body"]["anonymousId"] == message["anonymousId"]


def test_a_resent_message_id_is_queued_once(client, redis_client):
    message = make_segment_message(event="Product Added", properties={"product_id": "KB-1"})
    assert send(client, "/v1/track", message).json["accepted"] == 1
    again = send(client, "/v1/track", message)
    assert again.status_code == 200 and again.json["duplicates"] == 1
    assert len(queued(redis_client)) == 1 and len(queued(redis_client, destination="commerce")) == 1


def test_a_page_call_without_type_on_the_page_path_is_a_page_view(client, redis_client):
    message = make_segment_message(name="Home")
    del message["type"]
    assert send(client, "/v1/page", message).status_code == 200
    assert queued(redis_client)[0]["body"][0]["type"] == "page_view"


def test_rudderstack_sends_its_write_key_as_basic_auth(client, redis_client):
    response = send(client, "/v1/track", make_segment_message(event="Signed Up"), write_key=None, auth=basic(BROWSER_WRITE_KEY),
                    AnonymousId=base64.b64encode(b"anon").decode())  # fmt: skip
    assert response.status_code == 200 and response.json["accepted"] == 1
    assert queued(redis_client, destination="commerce")[0]["body"]["name"] == "Signed Up"


@pytest.mark.parametrize("path", ["/beacon/v1/batch", "/v1/batch"], ids=["rudderstack", "alias-no-list-names"])
def test_a_beacon_batch_carries_the_write_key_in_the_query(client, path):
    """RudderStack's beacon (text/plain, the key in the query, no Authorization); /v1/batch takes it too, a path the ad-block lists do not name."""
    body = json.dumps({"batch": [make_segment_message(event="Left")]}).encode()
    response = send(client, f"{path}?writeKey={BROWSER_WRITE_KEY}", body, write_key=None)
    assert response.status_code == 200 and response.json["accepted"] == 1


def test_a_backends_gzip_batch_speaks_for_each_visitor(client, redis_client):
    """A server key's batch holds many visitors: each one's IP, User-Agent and page come from its context."""
    orders = [
        make_segment_message(event="Order Completed", userId=f"user-{n}", anonymousId=None,
                             properties={"order_id": f"o-{n}", "currency": "SEK", "products": [{"product_id": f"P{n}", "price": n}]},
                             context={"ip": f"203.0.113.{n}", "userAgent": f"Mozilla/5.0 visitor {n}",
                                      "page": {"url": f"https://shop.example/checkout/{n}"}})
        for n in (1, 2)
    ]  # fmt: skip
    body = gzip.compress(json.dumps({"batch": orders}).encode())
    response = send(client, "/v1/batch", body, write_key=None, auth=basic(SERVER_WRITE_KEY), **{"Content-Encoding": "gzip"})
    assert response.status_code == 200 and response.json["accepted"] == 2, response.json
    depict = queued(redis_client)
    assert [(d["headers"]["X-Forwarded-For"], d["headers"]["User-Agent"], d["body"][0]["user_id"]) for d in depict] == [
        ("203.0.113.1", "Mozilla/5.0 visitor 1", "user-1"),
        ("203.0.113.2", "Mozilla/5.0 visitor 2", "user-2"),
    ]
    assert [d["body"][0]["type"] for d in depict] == ["purchase", "purchase"]


def test_a_server_key_is_refused_anywhere_but_basic_auth(client, redis_client):
    response = send(client, "/v1/t", make_segment_message(event="X"), write_key=SERVER_WRITE_KEY)
    assert response.status_code == 401 and response.json["code"] == "invalid_write_key"
    assert not queued(redis_client, destination="commerce")


def test_an_unknown_write_key_answers_as_segment_does(client):
    response = send(client, "/v1/t", make_segment_message(event="X"), write_key="nobody")
    assert response.status_code == 401
    assert response.json["success"] is False and response.json["message"] == "unknown write key"


def test_a_batch_over_500_kb_is_a_400_not_a_5xx(client):
    body = json.dumps({"batch": [make_segment_message(event="X", properties={"pad": "x" * 20_000}) for _ in range(30)],
                       "writeKey": BROWSER_WRITE_KEY}).encode()  # fmt: skip
    response = send(client, "/v1/batch", body, write_key=None)
    assert response.status_code == 400 and "500 KB" in response.json["message"]


def _backend_batch(messages: int, pad: int) -> bytes:
    """A server library's batch: ``messages`` tracks of about ``pad`` bytes each."""
    batch = [make_segment_message(event="Product Added", userId=f"user-{n}", properties={"product_id": f"P{n}", "pad": "x" * pad})
             for n in range(messages)]  # fmt: skip
    return json.dumps({"batch": batch}).encode()


def _post_framed(client, body: bytes, framing: str):
    """POST a server key's batch with a Content-Length, chunked (no length), or gzipped."""
    headers = {"Authorization": basic(SERVER_WRITE_KEY), "Content-Type": "application/json"}
    if framing == "gzip":
        return client.post("/v1/batch", data=gzip.compress(body), headers={**headers, "Content-Encoding": "gzip"})
    if framing == "chunked":
        return client.post("/v1/batch", input_stream=io.BytesIO(body), headers={**headers, "Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})  # fmt: skip
    return client.post("/v1/batch", data=body, headers=headers)


@pytest.mark.parametrize("framing", ["length", "chunked", "gzip"])
def test_a_backends_batch_past_64_kib_is_taken_however_it_is_framed(client, redis_client, framing):
    """segment-analytics-python's default batch (100 messages, about 110 KB) is within Segment's 500 KB, not /collect's 64 KiB."""
    body = _backend_batch(100, 900)
    assert 100 * 1024 < len(body) < 500 * 1024
    response = _post_framed(client, body, framing)
    assert response.status_code == 200, response.json
    assert response.json["accepted"] == 100 and len(queued(redis_client, destination="commerce")) == 100


@pytest.mark.parametrize("framing", ["length", "chunked", "gzip"])
def test_a_batch_past_500_kb_is_a_400_however_it_is_framed(client, redis_client, framing):
    body = _backend_batch(30, 17_000)
    assert len(body) > 500 * 1024
    response = _post_framed(client, body, framing)
    assert response.status_code == 400 and "500 KB" in response.json["message"]
    assert not queued(redis_client, destination="commerce")


def test_collect_keeps_its_64_kib(client):
    """The /v1 limit is /v1's own: /collect still refuses a body past 64 KiB."""
    response = client.post("/collect", data=b" " * (64 * 1024 + 1), headers={"Origin": ORIGIN, "Content-Type": "text/plain"})
    assert response.status_code == 413


def test_a_gzip_bomb_is_refused_once_it_inflates_past_500_kb(client):
    bomb = gzip.compress(b'{"batch": [' + b" " * 5_000_000 + b"]}")
    response = send(client, "/v1/batch", bomb, write_key=None, auth=basic(BROWSER_WRITE_KEY), **{"Content-Encoding": "gzip"})
    assert response.status_code == 400 and "inflated" in response.json["message"]


def test_a_message_over_32_kb_is_refused_by_index_and_the_rest_queued(client):
    batch = [make_segment_message(event="Huge", properties={"pad": "x" * 33_000}), make_segment_message(event="Fine")]
    response = send(client, "/v1/batch", {"batch": batch})
    assert response.status_code == 200 and response.json["accepted"] == 1
    assert response.json["rejected"] == [
        {"index": 0, "messageId": batch[0]["messageId"], "errors": {"_schema": ["a message may be at most 32 KB"]}}
    ]


def test_a_batch_with_no_valid_message_is_a_400_naming_each(client, redis_client):
    response = send(client, "/v1/batch", {"batch": [{"type": "track"}, "nonsense"]})
    assert response.status_code == 400 and response.json["code"] == "invalid_request"
    assert [item["index"] for item in response.json["error"]["details"]["rejected"]] == [0, 1]
    assert not queued(redis_client, destination="commerce")


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"batch": "no"}', b'{"batch": []}'])
def test_unusable_bodies_are_400s(client, body):
    response = send(client, "/v1/batch", body, write_key=None, auth=basic(BROWSER_WRITE_KEY))
    assert response.status_code == 400 and response.json["success"] is False


def test_a_page_of_another_origin_is_refused(client):
    response = send(client, "/v1/t", make_segment_message(event="X"), Origin="https://evil.example")
    assert response.status_code == 403


def test_the_preflight_lets_the_sdks_send_their_headers(client):
    response = client.options("/v1/track", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                                    "Access-Control-Request-Headers": "authorization,anonymousid,content-type"})  # fmt: skip
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert {"Authorization", "AnonymousId", "Content-Type"} <= set(response.headers["Access-Control-Allow-Headers"].split(", "))
    foreign = client.options("/v1/track", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in foreign.headers


def test_global_privacy_control_drops_a_browsers_messages(client, redis_client):
    response = send(client, "/v1/t", make_segment_message(event="X"), **{"Sec-GPC": "1"})
    assert response.status_code == 200 and response.json["dropped_for_privacy"] == 1
    assert not queued(redis_client, destination="commerce")


def test_a_consent_site_takes_only_messages_that_carry_consent(client, redis_client):
    without = send(client, "/v1/t", make_segment_message(event="X"), write_key=CONSENT_WRITE_KEY)
    assert without.json["dropped_for_privacy"] == 1
    segment_consent = {"consent": {"categoryPreferences": {"Analytics": True}}}
    rudder_consent = {"consentManagement": {"allowedConsentIds": ["C0001"]}}
    for context in (segment_consent, rudder_consent):
        given = send(client, "/v1/t", make_segment_message(event="X", context=context), write_key=CONSENT_WRITE_KEY)
        assert given.json["accepted"] == 1, given.json
    assert len(queued(redis_client, site=CONSENT_SITE, destination="commerce")) == 2


def test_a_browser_batch_is_held_to_the_web_events_per_request_budget(client, redis_client):
    """Over it is a 400, which the clients do not retry: the same batch would never fit."""
    batch = [make_segment_message(event=f"E{n}") for n in range(51)]
    response = send(client, "/v1/batch", {"batch": batch})
    assert response.status_code == 400 and "at most 50 per request" in response.json["message"]
    assert not queued(redis_client, destination="commerce")
    backend = send(client, "/v1/batch", {"batch": batch}, write_key=None, auth=basic(SERVER_WRITE_KEY))
    assert backend.status_code == 200 and backend.json["accepted"] == 51


def test_a_browser_order_of_100_products_counts_as_one_web_event_in_its_request(site_config, redis_url, redis_client):
    """At the default web_events_per_request (10), an Order Completed of 100 products is one message: it is
    accepted whole, one Depict purchase and one Web Event per product, and its 100 events are charged to the
    per-minute budgets (a visitor's 600 a minute hold six such orders)."""
    sites = dict(site_config.sites)
    sites[SITE] = replace(sites[SITE], limits=SiteLimits())
    client = create_app({"COLLECTOR_CONFIG": replace(site_config, sites=sites), "REDIS_URL": redis_url, "TESTING": True}).test_client()
    products = [{"product_id": f"P{n}", "price": n} for n in range(100)]
    order = make_segment_message(event="Order Completed", properties={"order_id": "o-1", "currency": "USD", "products": products})
    response = send(client, "/v1/track", order)
    assert response.status_code == 200 and response.json["accepted"] == 100, response.json
    [depict] = queued(redis_client)
    assert [event["product_id"] for event in depict["body"]] == [f"P{n}" for n in range(100)]
    assert len(queued(redis_client, destination="commerce")) == 100
    budget_left = SiteLimits().visitor_events_per_minute // 100
    for number in range(budget_left - 1):
        another = make_segment_message(event="Order Completed", properties={"order_id": f"o-{number + 2}", "products": products})
        assert send(client, "/v1/track", another).status_code == 200
    over = send(client, "/v1/track", make_segment_message(event="Order Completed", properties={"order_id": "o-9", "products": products}))
    assert over.status_code == 429


def test_identify_traits_pass_the_sites_account_allowlist(redis_url, depict_server, commerce_server):
    """A Commerce Account field the site does not accept (default: identifiers only) refuses that message, naming the field."""
    config = parse_config({"sites": {"shop": {
        "sources": {"write_keys": ["wk_shop_1"]},
        "commerce": {"url": commerce_server.url, "api_key": "k"},
    }}})  # fmt: skip
    client = create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True}).test_client()
    ssn = {"consumer": {"id": "c1", "ssn": "123-45-6789", "firstName": "A", "lastName": "B", "birthDate": "1990-01-01",
                        "phoneNumber": "5550100100"}}  # fmt: skip
    batch = [make_segment_message("identify", userId="u1", traits=ssn), make_segment_message("identify", userId="u2")]
    response = send(client, "/v1/batch", {"batch": batch}, write_key="wk_shop_1", Origin=None)
    assert response.status_code == 200 and response.json["accepted"] == 1
    [refused] = response.json["rejected"]
    assert refused["index"] == 0 and "ssn" in json.dumps(refused["errors"]) and "123-45" not in json.dumps(response.json)


def test_analytics_next_loads_its_settings_from_the_collector(client):
    response = client.get(f"/v1/projects/{BROWSER_WRITE_KEY}/settings", headers={"Origin": ORIGIN})
    assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == ORIGIN
    segment_io = response.json["integrations"]["Segment.io"]
    assert segment_io["apiHost"] == "localhost/v1" and segment_io["apiKey"] == BROWSER_WRITE_KEY
    assert response.json["remotePlugins"] == [] and response.json["metrics"]["sampleRate"] == 0
    assert client.get("/v1/projects/nobody/settings").status_code == 401


def app_with(site_config, redis_url: str, **settings):
    config = dataclasses.replace(site_config, settings=dataclasses.replace(site_config.settings, **settings))
    return create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True})


def test_the_settings_document_names_the_host_only_the_trusted_hop_reports(site_config, redis_url):
    """apiHost is the trusted proxy's X-Forwarded-Host (the last one), never a client's, and no shared cache keeps it."""
    settings = f"/v1/projects/{BROWSER_WRITE_KEY}/settings"
    behind_one = app_with(site_config, redis_url, trusted_proxy_hops=1).test_client()
    answer = behind_one.get(settings, headers={"X-Forwarded-Host": "evil.example, collect.shop.example"})
    assert answer.json["integrations"]["Segment.io"]["apiHost"] == "collect.shop.example/v1"
    assert answer.headers["Cache-Control"] == "private, max-age=300"
    assert behind_one.get(settings, headers={"X-Forwarded-Host": "evil.example/x?"}).status_code == 400
    direct = app_with(site_config, redis_url).test_client()
    answer = direct.get(settings, headers={"X-Forwarded-Host": "evil.example"}, base_url="https://collect.shop.example")
    assert answer.json["integrations"]["Segment.io"]["apiHost"] == "collect.shop.example/v1"
    assert answer.json["integrations"]["Segment.io"]["protocol"] == "https"


def test_a_server_write_key_gets_no_settings_and_no_source_config(client):
    """The two documents an SDK loads in the page name their key: a server key, a secret, gets the unknown key's 401."""
    for answer in (
        client.get(f"/v1/projects/{SERVER_WRITE_KEY}/settings"),
        client.get(f"/sourceConfig/?writeKey={SERVER_WRITE_KEY}", headers={"Authorization": basic(SERVER_WRITE_KEY)}),
    ):
        assert answer.status_code == 401 and answer.json["message"] == "unknown write key"
        assert SERVER_WRITE_KEY not in answer.get_data(as_text=True)


def refusal_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "collector.errors"]


def test_each_refusal_is_logged_once_with_the_keys_name_never_the_key(client, caplog):
    """400, 401 (an unknown key, a server key out of Basic auth) and their reasons, with where the key is configured."""
    caplog.set_level("WARNING")
    send(client, "/v1/batch", {"batch": [{"type": "track"}]})
    send(client, "/v1/t", make_segment_message(event="X"), write_key="guessed-key-123")
    send(client, "/v1/t", make_segment_message(event="X"), write_key=SERVER_WRITE_KEY)
    client.get(f"/v1/projects/{SERVER_WRITE_KEY}/settings")
    lines = refusal_lines(caplog)
    assert len(lines) == 4, lines
    assert lines[0] == f"POST /v1/batch refused with 400: no message was valid (write key: sites.{SITE}.sources.write_keys[0])"
    assert lines[1].startswith("POST /v1/t refused with 401: unknown write key (write key: unknown, fingerprint ")
    assert lines[2].endswith(f"(write key: sites.{SITE}.sources.server_write_keys[0])")
    assert lines[3] == f"GET /v1/projects/<write key>/settings refused with 401: unknown write key (write key: sites.{SITE}.sources.server_write_keys[0])"
    for secret in (SERVER_WRITE_KEY, BROWSER_WRITE_KEY, "guessed-key-123"):
        assert secret not in caplog.text


def test_over_the_rate_limit_v1_answers_segments_429_and_logs_it(site_config, redis_url, caplog):
    caplog.set_level("WARNING")
    client = app_with(site_config, redis_url, rate_limit="2 per minute").test_client()
    statuses = [send(client, "/v1/t", make_segment_message(event="X"), write_key=None, auth=basic(BROWSER_WRITE_KEY)) for _ in range(3)]
    assert [answer.status_code for answer in statuses] == [200, 200, 429]
    refused = statuses[-1]
    assert refused.json["code"] == "rate_limited" and refused.json["error"]["code"] == 429 and refused.headers["Retry-After"]
    assert refusal_lines(caplog) == [
        f"POST /v1/t refused with 429: {refused.json['message']} (write key: sites.{SITE}.sources.write_keys[0])"
    ]


@pytest.mark.parametrize(
    "path", [f"/v1/projects/{BROWSER_WRITE_KEY}/settings", f"/sourceConfig/?writeKey={BROWSER_WRITE_KEY}"]
)
def test_the_documents_the_sdks_load_are_rate_limited_like_collect(site_config, redis_url, path):
    client = app_with(site_config, redis_url, rate_limit="3 per minute").test_client()
    statuses = [client.get(path, headers={"Authorization": basic(BROWSER_WRITE_KEY)}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_refusal_lines_are_rate_limited_and_the_next_line_counts_the_rest(app, caplog):
    from collector.errors import RefusalLog

    caplog.set_level("WARNING")
    now = [0.0]
    refusals = RefusalLog(per_minute=3, clock=lambda: now[0])
    with app.test_request_context("/v1/t", method="POST"):
        for _ in range(5):
            refusals.refused(401, "unknown write key", "none read")
        now[0] += 20  # a minute's third: one line's worth
        refusals.refused(401, "unknown write key", "none read")
    lines = refusal_lines(caplog)
    assert len(lines) == 4
    assert lines[-1] == "POST /v1/t refused with 401: unknown write key (write key: none read) [and 2 refusals before it, not logged]"


def test_rudderstack_loads_its_source_config_from_the_collector(client):
    response = client.get(f"/sourceConfig/?p=npm&v=3&writeKey={BROWSER_WRITE_KEY}", headers={"Authorization": basic(BROWSER_WRITE_KEY)})
    assert response.status_code == 200
    source = response.json["source"]
    assert source["enabled"] is True and source["destinations"] == [] and source["name"] == SITE
    assert source["config"]["statsCollection"]["errors"]["enabled"] is False
    assert client.get("/sourceConfig/?writeKey=nobody").status_code == 401


def test_rudderstacks_own_forms_are_understood(client, redis_client):
    """Traits in context.traits, an anonymous userId of "", and "$direct" for no referrer."""
    identify = make_segment_message("identify", userId="user-7", anonymousId="fadf7d89-af61-496f-b720-07fe3829fb46",
                                    context={"traits": {"lead": "lead_1"}, "page": {"url": "https://shop.example/", "referrer": "$direct"}})  # fmt: skip
    page = make_segment_message("page", userId="", properties={"url": "https://shop.example/", "referrer": "$direct"},
                                context={"page": {"url": "https://shop.example/", "referrer": "$direct"}})  # fmt: skip
    response = send(client, "/v1/batch", {"batch": [identify, page]}, write_key=None, auth=basic(BROWSER_WRITE_KEY))
    assert response.json["accepted"] == 2, response.json
    [identified, viewed] = queued(redis_client, destination="commerce")
    assert identified["body"]["account"] == {"id": "user-7", "anonymousIds": [identify["anonymousId"]], "lead": "lead_1"}
    assert "account" not in viewed["body"]
    [depict] = queued(redis_client)
    assert "document_referrer" not in depict["body"][0] and depict["body"][0]["user_id"] == page["anonymousId"]


def test_refused_messages_reach_the_consoles_bad_rows(client, redis_client):
    """As /collect's do: a refused request with its reason, and the messages an accepted batch refused."""
    from collector.observe.live_tail import recent_refusals

    send(client, "/v1/batch", {"batch": [{"type": "track"}, make_segment_message(event="Fine")]})
    send(client, "/v1/t", make_segment_message(event="X"), write_key="nobody")
    [unknown, partly] = recent_refusals(redis_client)
    assert (unknown["status"], unknown["message"]) == (401, "unknown write key")
    assert (partly["status"], partly["message"], partly["site"]) == (200, "1 of the batch's messages refused", SITE)
    assert partly["details"]["rejected"][0]["index"] == 0
