"""Reading /collect's body: hostile or broken bodies get a 4xx in the error shape, never a 5xx or a cut body."""

from __future__ import annotations

import http.client
import json
import logging

import pytest

from collector.config.defaults import MAX_BODY_BYTES
from tests.collector.inbound.test_collect import nothing_queued, post
from tests.conftest import ORIGIN, SITE
from tests.factories import make_event


def _event_json(**fields) -> str:
    return json.dumps(make_event(**fields))


HOSTILE_BODIES = [
    ("10,000 nested brackets", "[" * 10_000 + "]" * 10_000, "nested too deeply"),
    ("nested objects in props", '{"site": "%s", "events": [%s]}' % (SITE, '{"a":' * 5000 + "1" + "}" * 5000), "nested too deeply"),
    ("5,000-digit integer", '{"site": "%s", "events": [%s]}' % (SITE, _event_json().replace('"document_width": 1280', '"document_width": ' + "9" * 5000)), "5000 digits"),
    ("NaN", '{"site": "%s", "events": [%s]}' % (SITE, _event_json().replace('"document_width": 1280', '"document_width": NaN')), "NaN is not a JSON number"),
    ("Infinity", '{"site": "%s", "events": [%s]}' % (SITE, _event_json().replace('"document_width": 1280', '"document_width": -Infinity')), "-Infinity is not a JSON number"),
    ("1e400", '{"site": "%s", "events": [%s]}' % (SITE, _event_json().replace('"document_width": 1280', '"document_width": 1e400')), "out of range"),
    ("invalid UTF-8", b'{"site": "test_store", "events": [{"id": "abcdefgh", "type": "caf\xe9"}]}', "not UTF-8"),
    ("UTF-8 encoded surrogate", b'{"site": "test_store", "events": [{"id": "abcdefgh", "type": "\xed\xa0\x80"}]}', "not UTF-8"),
]


@pytest.mark.parametrize("name, body, message", HOSTILE_BODIES, ids=[case[0] for case in HOSTILE_BODIES])
def test_a_hostile_body_is_400_with_a_reason_and_one_warning(client, redis_client, caplog, name, body, message):
    """Deep nesting, huge or non-finite numbers and bad UTF-8 are a 400 in the error shape, logged once without a traceback."""
    with caplog.at_level(logging.WARNING):
        response = post(client, body)
    assert response.status_code == 400
    assert response.json["error"]["code"] == 400 and message in response.json["error"]["message"]
    assert nothing_queued(redis_client)
    warnings = [record for record in caplog.records if record.name.startswith("collector")]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING and warnings[0].exc_info is None


def test_a_lone_surrogate_in_a_prop_is_422_naming_the_field(client, redis_client):
    """A string cut inside an emoji cannot be sent to a vendor: the event is refused, the field named."""
    body = '{"site": "%s", "events": [%s]}' % (SITE, json.dumps(make_event(props={"product_id": "KEY"})).replace('"KEY"', '"KEY\\ud800"'))
    response = post(client, body)
    assert response.status_code == 422
    errors = response.json["error"]["details"]["rejected"][0]["errors"]
    assert "lone UTF-16 surrogate" in errors["props"]["product_id"][0]
    assert nothing_queued(redis_client)


def test_a_lone_surrogate_in_the_type_refuses_that_event_only(client, redis_client):
    """The good events of a batch are queued; the one with a broken string is named by index and field."""
    good, bad = make_event(), make_event("User \ud83d Login")
    body = '{"site": "%s", "events": [%s, %s]}' % (SITE, json.dumps(good), json.dumps(bad))
    assert "\\ud83d" in body
    response = post(client, body)
    assert response.status_code == 202
    assert response.json["accepted"] == 1
    [rejected] = response.json["rejected"]
    assert rejected["index"] == 1 and rejected["id"] == bad["id"] and "type" in rejected["errors"]


def test_a_surrogate_pair_is_an_emoji_and_is_accepted(client):
    """A whole emoji written as a JSON surrogate pair is valid text."""
    body = '{"site": "%s", "events": [%s]}' % (SITE, json.dumps(make_event(props={"product_id": "KEY \U0001F600"})))
    assert "\\ud83d\\ude00" in body
    assert post(client, body).status_code == 202


def test_a_lone_surrogate_in_a_map_key_is_named(client):
    """A broken key of entity_identifiers is refused as well, named readably."""
    event = json.dumps(make_event(props={"entity_identifiers": {"KEY": "1"}})).replace('"KEY"', '"K\\udfff"')
    response = post(client, '{"site": "%s", "events": [%s]}' % (SITE, event))
    assert response.status_code == 422
    errors = response.json["error"]["details"]["rejected"][0]["errors"]
    assert list(errors["props"]["entity_identifiers"]) == ["K\\udfff"]


def _post_chunked(url: str, chunks: list[bytes]) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest("POST", "/collect")
        connection.putheader("Content-Type", "text/plain")
        connection.putheader("Origin", ORIGIN)
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        for chunk in chunks:
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"0\r\n\r\n")
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def test_a_chunked_body_past_the_limit_is_413_not_cut(live_stack):
    """A body without Content-Length is refused whole past 64 KiB, even when its first 64 KiB is valid JSON."""
    valid = json.dumps({"site": SITE, "events": [make_event()]}).encode()
    padded = valid + b" " * (MAX_BODY_BYTES - len(valid))
    status, body = _post_chunked(live_stack.url, [padded[i : i + 8192] for i in range(0, len(padded), 8192)] + [b" " * 300_000])
    assert status == 413 and body["error"]["code"] == 413


def test_a_chunked_body_within_the_limit_is_read_whole(live_stack):
    """A chunked body under the limit is accepted like any other."""
    body = json.dumps({"site": SITE, "events": [make_event()]}).encode()
    status, answer = _post_chunked(live_stack.url, [body[:10], body[10:]])
    assert status == 202 and answer["accepted"] == 1


PLAIN_AND_ODD_BODIES = [
    b'{"site": "s", "events": [{"id": "abcdefgh", "type": "page_view", "ts": 1796000000000, "props": {"entity_price": 9.5}}]}',
    b'{"a": 9223372036854775807, "b": -9223372036854775808, "c": 1.5e308, "d": [true, false, null]}',
    b'{"big": 18446744073709551616, "bigger": -99999999999999999999}',
    b'{"a": 1e400}', b"[NaN]", b'{"a": "\\ud800"}', b'{"a": "\xff"}', b"[" * 600 + b"]" * 600, b'{"a": 1, "a": 2}',
    '{"text": "caf\u00e9 \U0001f600"}'.encode(),
]  # fmt: skip


@pytest.mark.parametrize("raw", PLAIN_AND_ODD_BODIES)
def test_the_fast_reader_reads_exactly_what_the_strict_one_reads(raw):
    """orjson reads plain bodies; whatever it reads, or refuses, the strict reader reads or refuses alike."""
    from collector.errors import BadRequest
    from collector.inbound.request_body import parse_json, parse_json_strictly

    def outcome(reader):
        try:
            value = reader(raw)
        except BadRequest:
            return "refused"
        return json.dumps(value, sort_keys=True)

    assert outcome(parse_json) == outcome(parse_json_strictly)
