"""Property-based fuzzing of the Segment/RudderStack endpoints: whatever a client sends, never a 5xx.

Messages shaped like Segment's with anything in their fields (lone
surrogates, huge numbers, nesting), and bodies no client would send, go to
``/v1/batch`` and ``/v1/t`` with the browser key, and gzip'd with the
server key. Every answer is below 500 and JSON, every refusal carries
Segment's ``code``/``message``, and every delivery a ``200`` queued can be
built as the HTTP request the worker will send (valid JSON text, valid
header values). Bounded like ``tests/collector/inbound/test_fuzz.py``
(``FUZZ_EXAMPLES``, default 150).
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter

import httpx
from hypothesis import given
from hypothesis import strategies as st
from redis import Redis

from collector.inbound.sources.segment import CALLS
from collector.storage.outbox import decode_entry
from tests.collector.inbound.sources.test_api import basic
from tests.collector.inbound.test_fuzz import FUZZ_SETTINGS, json_values, report, show_falsifying_examples
from tests.conftest import BROWSER_WRITE_KEY, ORIGIN, SERVER_WRITE_KEY

names = st.sampled_from(["Product Viewed", "Product Clicked", "Product Added", "Order Completed", "Signed Up"]) | json_values
texts = st.text(max_size=40) | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3) | json_values
products = st.lists(st.fixed_dictionaries({}, optional={"product_id": texts, "price": json_values, "sku": texts}), max_size=3)
properties = st.fixed_dictionaries(
    {}, optional={"product_id": texts, "price": json_values, "currency": texts, "recommendation_id": texts, "products": products | json_values}
)
contexts = st.fixed_dictionaries(
    {},
    optional={
        "page": st.fixed_dictionaries({}, optional={"url": texts, "referrer": texts}) | json_values,
        "userAgent": texts, "ip": texts, "screen": json_values, "traits": json_values, "sessionId": json_values,
    },
)  # fmt: skip
ids = st.uuids().map(str)
well_formed = st.fixed_dictionaries(
    {"type": st.sampled_from(CALLS), "anonymousId": ids, "userId": ids, "event": names, "groupId": ids, "previousId": ids,
     "messageId": ids | texts},
    optional={"properties": properties, "traits": json_values, "context": contexts,
              "timestamp": st.datetimes().map(lambda moment: moment.isoformat() + "Z") | texts, "sentAt": texts},
)  # fmt: skip
anything_in_fields = st.fixed_dictionaries(
    {"type": st.sampled_from(CALLS) | json_values},
    optional={
        "messageId": texts, "anonymousId": texts, "userId": texts, "event": names, "groupId": texts, "previousId": texts,
        "properties": properties | json_values, "traits": json_values, "context": contexts | json_values,
        "timestamp": texts, "sentAt": texts,
    },
)  # fmt: skip
messages = well_formed | anything_in_fields


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    batch = draw(st.lists(messages, min_size=1, max_size=4) | st.lists(messages | json_values, min_size=1, max_size=4))
    body = draw(st.sampled_from([{"batch": batch}, batch[0] if isinstance(batch[0], dict) else {}]) | st.just(batch[0]))
    path = "/v1/batch" if isinstance(body, dict) and "batch" in body else "/v1/t"
    text = json.dumps(body).encode() if draw(st.integers(0, 9)) else draw(st.binary(max_size=200))
    if draw(st.booleans()):
        return path, gzip.compress(text), {"Authorization": basic(SERVER_WRITE_KEY), "Content-Encoding": "gzip"}
    return path, text, {"Authorization": basic(BROWSER_WRITE_KEY), "Origin": ORIGIN}


def test_sources_never_fail_whatever_a_client_sends(client, redis_url, capsys, monkeypatch):
    show_falsifying_examples(monkeypatch)
    redis = Redis.from_url(redis_url)
    statuses: Counter = Counter()
    started = time.monotonic()

    @FUZZ_SETTINGS
    @given(sent=requests())
    def post(sent: tuple[str, bytes, dict[str, str]]) -> None:
        path, body, headers = sent
        redis.flushdb()
        response = client.post(path, data=body, headers={"Content-Type": "text/plain", **headers})
        statuses[response.status_code] += 1
        answer = f"answered {response.status_code} {response.get_data()[:300]!r}\nto: {path} {body!r:.500}"
        assert response.status_code < 500 and response.mimetype == "application/json", answer
        if response.status_code >= 400:
            assert response.json["success"] is False and response.json["code"] and response.json["message"], answer
            return
        for key in redis.keys("collector:outbox:*"):
            for entry in redis.lrange(key, 0, -1):
                for delivery in decode_entry(entry):
                    httpx.Request("POST", "http://vendor.test/", json=delivery["body"], headers=delivery["headers"])

    try:
        post()
    finally:
        report(capsys, "Segment/RudderStack bodies", statuses, started)
