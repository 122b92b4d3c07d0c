"""Property-based fuzzing of POST /collect: from its own /openapi.json, and with bodies no schema describes.

Both tests drive the real Flask app of the ``app`` fixture in-process, on
the real Redis of the session (database 1, emptied before every case so a
failing case replays alike). They are bounded for CI: ``FUZZ_EXAMPLES``
cases each (default 150), derandomized, so every run sends the same bodies.
A longer hunt::

    FUZZ_EXAMPLES=5000 python -m pytest tests/collector/inbound/test_fuzz.py

Each test prints, past pytest's capture, how many requests it sent and the
statuses that came back (``[fuzz] ...`` lines).
An exception out of the app counts as the 500 it would be in production.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import hypothesis.core
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.vendor import pretty
from redis import Redis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from collector.config import defaults
from tests.conftest import ORIGIN, SITE

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same cases on every run, so CI is reproducible
    database=None,
    deadline=timedelta(seconds=2),  # per case; a request normally takes milliseconds
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no "explain": it re-runs failures traced, slowly
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
# What a browser may add: no Origin (curl), the site's, a foreign one (403); Sec-GPC (dropped for privacy).
HEADER_SETS = (
    {},
    {"Origin": ORIGIN},
    {"Origin": "https://evil.example"},
    {"Origin": ORIGIN, "Sec-GPC": "1"},
)
ERROR_KEYS = {"code", "message", "details"}


def error_shape_problem(status: int, body: Any) -> str | None:
    """Why ``body`` is not ``{"error": {"code": status, "message": str[, "details": ...]}}``, or None."""
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return f"a {status} body is not {{'error': {{...}}}}: {body!r:.300}"
    error = body["error"]
    if not {"code", "message"} <= set(error) <= ERROR_KEYS:
        return f"a {status} error has keys {sorted(error)}, not code, message and maybe details"
    if error["code"] != status or not isinstance(error["message"], str) or not error["message"]:
        return f"a {status} error says code={error['code']!r}, message={error['message']!r:.100}"
    return None


def error_shape(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """A schemathesis check: every 4xx answer is JSON in the collector's one error shape."""
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(f"a {response.status_code} body is not JSON: {response.text[:300]!r}") from None
        problem = error_shape_problem(response.status_code, body)
        if problem:
            raise AssertionError(problem)


def shortened(report: str, width: int = 1500) -> str:
    """Schemathesis' failure report, its long lines (the curl of a big body) cut to ``width``."""
    return "\n".join(line if len(line) <= width else f"{line[:width]} ...({len(line) - width} more)" for line in report.splitlines())


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance, error_shape]


def report(capsys, name: str, statuses: Counter, started: float) -> None:
    """Print the case count past pytest's capture, so a run's figure can be quoted."""
    spread = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items(), key=str))
    with capsys.disabled():
        print(f"\n[fuzz] {name}: {sum(statuses.values())} requests in {time.monotonic() - started:.1f} s ({spread})")


def show_falsifying_examples(monkeypatch) -> None:  # noqa: ANN001
    """Undo, for this test, Schemathesis' speed-up that blanks Hypothesis' "Falsifying example" values."""
    monkeypatch.setattr(hypothesis.core, "RepresentationPrinter", pretty.RepresentationPrinter, raising=False)


def test_collect_answers_what_its_openapi_document_promises(app, redis_url, capsys, monkeypatch):
    """Schemathesis cases from /openapi.json never get a 5xx, and each answer matches the documented status, type, body and error shape."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operation = schema["/collect"]["POST"]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    show_falsifying_examples(monkeypatch)
    redis = Redis.from_url(redis_url)
    statuses: Counter = Counter()
    started = time.monotonic()

    # The document's `events` items are open objects and `site` any string: most cases would stop at
    # "unknown site". Some cases name the configured site and carry one well-formed event, to get past it.
    @FUZZ_SETTINGS
    @given(case=cases, known_site=st.booleans(), good_event=st.booleans(), headers=st.sampled_from(HEADER_SETS))
    def post_case(case: schemathesis.Case, known_site: bool, good_event: bool, headers: dict[str, str]) -> None:
        if isinstance(case.body, dict):
            if known_site and "site" in case.body:
                case.body["site"] = SITE
            if good_event and isinstance(case.body.get("events"), list):
                case.body["events"] = [{"id": "fuzz-event-0001", "type": "page_view", "ts": 1}, *case.body["events"]][:50]
        redis.flushdb()
        try:
            response = case.call(headers=headers)
        except Exception as error:
            statuses["500 (exception)"] += 1
            sent = case.as_curl_command(headers=headers)
            raise AssertionError(f"answered 500, {type(error).__name__}: {str(error)[:300]}\nto: {sent[:1500]}") from error
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as failures:
            raise AssertionError(shortened(str(failures))) from None

    try:
        post_case()
    finally:
        report(capsys, "schemathesis cases", statuses, started)


# --- Bodies no schema would generate -------------------------------------------------------------

ENVELOPE = '{"site": "%s", "events": [{"id": "fuzz-event-0001", "type": "page_view", %s}]}'


def in_event(field: str, token: str) -> bytes:
    """A batch of one otherwise good event whose ``field`` holds the raw JSON ``token``."""
    return (ENVELOPE % (SITE, f'"{field}": {token}')).encode()


DEEP = 10_000
HOSTILE: dict[str, bytes] = {
    "invalid UTF-8": b'{"site": "test_store\xff\xfe", "events": [{}]}',
    "invalid UTF-8 in an event": in_event("user_id", '"x"').replace(b'"x"', b'"\xc3\x28"'),
    "raw surrogate bytes": in_event("user_id", '"x"').replace(b'"x"', b'"\xed\xa0\x80"'),
    "a lone surrogate escape alone": b'"\\ud800"',
    "a lone surrogate in site": b'{"site": "\\ud800", "events": [{}]}',
    "a lone surrogate in user_id": in_event("user_id", '"\\ud800"'),
    "a lone surrogate in type": (ENVELOPE % (SITE, '"ts": 1')).replace('"page_view"', '"\\udc00"').encode(),
    "a lone surrogate in a key": in_event("props", '{"entity_identifiers": {"\\udfff": "a"}}'),
    "NaN alone": b"NaN",
    "NaN in ts": in_event("ts", "NaN"),
    "NaN in a price": in_event("props", '{"entity_price": NaN}'),
    "Infinity alone": b"Infinity",
    "-Infinity in document_width": in_event("document_width", "-Infinity"),
    "1e400 alone": b"1e400",
    "1e400 in document_width": in_event("document_width", "1e400"),
    "1e400 in a price": in_event("props", '{"entity_price": 1e400}'),
    "a 5,000-digit integer alone": b"9" * 5000,
    "a 5,000-digit integer in ts": in_event("ts", "9" * 5000),
    "a 5,000-digit integer in a price": in_event("props", '{"entity_price": %s}' % ("9" * 5000)),
    "10,000 unclosed [": b"[" * DEEP,
    "10,000 nested [ ]": b"[" * DEEP + b"]" * DEEP,
    "10,000 nested objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "10,000 nested [ in a Commerce account": in_event("props", '{"account": {"id": "a", "consumer": %s}}' % ("[" * DEEP + "]" * DEEP)),
    "900 nested [ in a Commerce account": in_event("props", '{"account": {"id": "a", "consumer": %s}}' % ("[" * 900 + "]" * 900)),
    "990 nested [ in entity_identifiers": in_event("props", '{"entity_identifiers": %s}' % ("[" * 990 + "]" * 990)),
    "a 70-bit integer in ts": in_event("ts", str(2**70)),
    "a 100-digit integer in ts": in_event("ts", "9" * 100),
}

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and ±Infinity included: json.dumps writes them as NaN and Infinity
    | st.text(max_size=20)
    | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)  # lone surrogates
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=25
)
event_ids = st.from_regex(defaults.EVENT_ID_PATTERN, fullmatch=True) | json_values
event_types = st.sampled_from((*defaults.DEPICT_EVENT_TYPES, "User Login")) | json_values
event_fields = (
    "ts", "anonymous_id", "session_id", "user_id", "account_id", "url", "document_referrer", "document_width", "props", "extra",
)  # fmt: skip
props = st.fixed_dictionaries(
    {},
    optional={
        **{name: json_values for name in defaults.DEPICT_STRING_PROPS},
        defaults.DEPICT_LIST_PROP: json_values,
        defaults.DEPICT_MAP_PROP: json_values,
        "account": st.fixed_dictionaries({"id": json_values}, optional={"consumer": json_values, "lead": json_values}),
    },
)
events = st.fixed_dictionaries(
    {"id": event_ids, "type": event_types},
    optional={**{name: json_values for name in event_fields}, "props": props | json_values},
)
envelopes = st.fixed_dictionaries(
    {"site": st.just(SITE) | json_values, "events": st.lists(events | json_values, min_size=1, max_size=4) | json_values}
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """Any JSON value, or a batch-shaped one with anything in its fields, as text a browser might send."""
    value = draw(envelopes | json_values)
    if draw(st.booleans()):
        return json.dumps(value).encode()  # surrogates written as \\udXXX escapes
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "utf-32"]))
    return json.dumps(value, ensure_ascii=False).encode(encoding, errors="surrogatepass")


@st.composite
def hostile_tokens(draw: st.DrawFn) -> bytes:
    """Huge integers, deep nesting and non-finite numbers, alone or in a field of a good event."""
    size = draw(st.integers(min_value=1, max_value=12_000))
    token = draw(
        st.sampled_from(
            ["9" * min(size, 6000), "[" * size, "[" * size + "]" * size, '{"a": ' * size + "0" + "}" * size,
             "NaN", "Infinity", "-Infinity", f"1e{size}", f"-1e{size}", f"0.{'1' * min(size, 6000)}"]
        )
    )  # fmt: skip
    if draw(st.booleans()):
        return token.encode()
    return in_event(draw(st.sampled_from(event_fields[:-1])), token)


bodies = json_bodies() | hostile_tokens() | st.binary(max_size=300)


class Hostile(bytes):
    """A body of HOSTILE, shown by its name when Hypothesis reports it."""

    name: str

    def __repr__(self) -> str:
        return f"HOSTILE[{self.name!r}]"


def hostile_examples(test):  # noqa: ANN001, ANN201
    """Every body of HOSTILE as an explicit example: they run first, whatever FUZZ_EXAMPLES is."""
    for name, raw in reversed(HOSTILE.items()):
        body = Hostile(raw)
        body.name = name
        test = example(body=body)(test)
    return test


def test_collect_never_fails_on_bodies_outside_the_schema(client, redis_url, capsys, monkeypatch):
    """Arbitrary JSON and bytes as text/plain never get a 5xx, and every 4xx is JSON in the error shape."""
    show_falsifying_examples(monkeypatch)
    redis = Redis.from_url(redis_url)
    statuses: Counter = Counter()
    started = time.monotonic()
    documented = {int(status) for status in client.get("/openapi.json").json["paths"]["/collect"]["post"]["responses"]}

    @FUZZ_SETTINGS
    @hostile_examples
    @given(body=bodies)
    def post_body(body: bytes) -> None:
        redis.flushdb()
        try:
            response = client.post("/collect", data=body, content_type="text/plain", headers={"Origin": ORIGIN})
        except Exception as error:
            statuses["500 (exception)"] += 1
            raise AssertionError(f"answered 500, {type(error).__name__}: {str(error)[:300]}\nto: {body!r:.500}") from error
        statuses[response.status_code] += 1
        answer = f"answered {response.status_code} {response.get_data()[:300]!r}\nto: {body!r:.500}"
        assert response.status_code < 500, answer
        assert response.status_code in documented, f"undocumented status: {answer}"
        assert response.mimetype == "application/json", f"not JSON ({response.mimetype}): {answer}"
        if response.status_code >= 400:
            problem = error_shape_problem(response.status_code, json.loads(response.get_data()))
            assert problem is None, f"{problem}\n{answer}"

    try:
        post_body()
    finally:
        report(capsys, "arbitrary bodies", statuses, started)
