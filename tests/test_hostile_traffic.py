"""What real browsers and strangers send to POST /collect, against `collector serve` and `collector worker`.

One stack for the module (:class:`tests.stack.ServeStack`: gunicorn with two
workers, a worker supervisor, its own redis-server and vendor stand-ins).
Each row of the table sends one request as it comes off the wire (raw
bytes in headers, chunked bodies) and checks its status, the error shape
of a 4xx, and where each of its events ends:

- ``depict`` / ``commerce`` / ``both``: delivered, the stand-in accepted it as spec-valid;
- ``dead``: in the dead letters with a reason, within the 20 s retry window;
- ``refused``: nothing reached either stand-in by the time an honest event sent after it did.

After every row an honest event must reach Depict within 5 s: no input may
wedge the pipeline. The module ends by searching the logs, every Redis key
and the dead letters for the API keys and a social security number.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from collector.mapping.commerce import web_event_id
from collector.storage.outbox import decode_entry
from tests.conftest import COMMERCE_KEY, DEPICT_KEY
from tests.factories import make_event
from tests.stack import CONSENT_SITE, ORIGIN, SITE, Answer, ServeStack, http_exchange
from tests.vendors import ReceivedRequest

CANARY_SECONDS = 5.0
DELIVERY_SECONDS = 10.0
DEAD_LETTER_SECONDS = 25.0  # the config's retry_for_seconds (20) and a little
REFUSED_AFTER_SECONDS = 1.0
SSN = "123-45-6789"
SECRETS = (DEPICT_KEY, COMMERCE_KEY, SSN)
TEXT_PLAIN = ("Content-Type", "text/plain;charset=UTF-8")
ACCOUNT_WITH_SSN = {
    "id": "acc_1",
    "consumer": {
        "id": "con_1",
        "ssn": SSN,
        "birthDate": "1990-01-01",
        "email": "a@b.example",
        "firstName": "A",
        "lastName": "B",
        "phoneNumber": "5555550199",
    },
}
PLAIN_ACCOUNT = {"id": "acc_1", "consumer": "con_1", "anonymousIds": ["a1"]}


# The stack and what the table saw


@dataclass
class Observation:
    row: str
    status: str
    fates: str
    canary: str
    problems: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeStack]:
    with ServeStack(tmp_path_factory.mktemp("hostile")) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def observations(request: pytest.FixtureRequest) -> Iterator[list[Observation]]:
    """Rows seen by the table, printed as a summary when the module ends."""
    seen: list[Observation] = []
    yield seen
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not seen:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("hostile traffic: row | status | end state of its events | honest event after it | problems")
        for item in seen:
            reporter.write_line(f"  {item.row} | {item.status} | {item.fates} | {item.canary} | {item.problems}")


# Where an event went


def depict_requests(stack: ServeStack, event_id: str) -> list[ReceivedRequest]:
    """Depict requests whose array carries the event (any status), or whose raw body names it."""
    found = []
    for request in stack.depict.requests:
        events = request.json if isinstance(request.json, list) else []
        if any(isinstance(event, dict) and event.get("deduplication_id") == event_id for event in events):
            found.append(request)
        elif not events and event_id.encode() in request.body:
            found.append(request)
    return found


def commerce_requests(stack: ServeStack, site: str, event_id: str) -> list[ReceivedRequest]:
    """Commerce requests for the event's Web Event (its id is derived from the site and event id)."""
    wanted = web_event_id(site, event_id)
    return [request for request in stack.commerce.requests if wanted.encode() in request.body]


def delivered(requests: list[ReceivedRequest]) -> list[ReceivedRequest]:
    return [request for request in requests if 200 <= request.status < 300 and not request.spec_errors]


def dead_letters_of(stack: ServeStack, event_id: str) -> list:
    return [letter for letter in stack.dead_letters() if event_id in (letter.delivery.get("event_ids") or ())]


def whereabouts(stack: ServeStack, site: str, event_id: str) -> str:
    """Where an event got to, for the summary and for failure messages."""
    parts = []
    depict = depict_requests(stack, event_id)
    commerce = commerce_requests(stack, site, event_id)
    if depict:
        parts.append("depict " + ",".join(str(request.status) for request in depict))
    if commerce:
        parts.append("commerce " + ",".join(str(request.status) for request in commerce))
    letters = dead_letters_of(stack, event_id)
    if letters:
        parts.append("dead-lettered (" + "; ".join(f"{letter.delivery['destination']}: {letter.reason}" for letter in letters) + ")")
    return " + ".join(parts) or "nowhere"


def wait_until(condition: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# The honest event after every row


@dataclass
class Canary:
    seconds: float | None
    detail: str
    at_commerce: bool


def send_honest_event(stack: ServeStack) -> Canary:
    """A plain page view from the shop's page; how long it took to reach Depict (None: not within 5 s)."""
    event = make_event("page_view")
    started = time.monotonic()
    try:
        answer = httpx.post(
            f"{stack.url}/collect",
            content=json.dumps({"site": SITE, "events": [event]}),
            headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN},
            timeout=CANARY_SECONDS,
        )
    except httpx.HTTPError as error:
        return Canary(None, f"honest event not answered: {type(error).__name__}", False)
    if answer.status_code != 202:
        return Canary(None, f"honest event answered {answer.status_code}: {answer.text[:300]}", False)
    arrived = wait_until(lambda: delivered(depict_requests(stack, event["id"])), CANARY_SECONDS - (time.monotonic() - started))
    seconds = time.monotonic() - started
    if not arrived:
        return Canary(None, f"honest event not at Depict within {CANARY_SECONDS} s ({whereabouts(stack, SITE, event['id'])})", False)
    at_commerce = wait_until(lambda: delivered(commerce_requests(stack, SITE, event["id"])), CANARY_SECONDS)
    return Canary(seconds, f"{seconds:.2f} s", at_commerce)


# The table


@dataclass(frozen=True)
class Row:
    """One request and what must come of it. ``fates`` has one entry per event of ``events()``."""

    id: str
    status: int | None  # None: any answer below 500 (preflights, whose status is the server's choice)
    fates: tuple[str, ...] = ()
    events: Callable[[], list[dict]] = lambda: []
    site: str = SITE
    origin: str | None = ORIGIN
    headers: tuple[tuple[str, str | bytes], ...] = ()
    envelope: dict[str, Any] = field(default_factory=dict)
    body: Callable[[bytes], bytes] | None = None  # rewrites the JSON body's bytes
    chunked: bool = False
    method: str = "POST"
    forwarded_headers: dict[str, str] = field(default_factory=dict)  # what Depict must receive
    check: Callable[[Answer], list[str]] = lambda answer: []


def product(product_id: str, event_type: str = "add_to_cart", **fields: Any) -> dict:
    return make_event(event_type, props={"product_id": product_id}, **fields)


def replace(placeholder: str, raw: bytes) -> Callable[[bytes], bytes]:
    """A body rewrite that puts bytes JSON cannot express (or json.dumps will not write) where a placeholder string was."""
    return lambda body: body.replace(json.dumps(placeholder).encode(), raw)


def nested_brackets(_: bytes) -> bytes:
    return b'{"site":"' + SITE.encode() + b'","events":' + b"[" * 10_000 + b"]" * 10_000 + b"}"


def padded_past_the_limit(body: bytes) -> bytes:
    """The batch's JSON filled with spaces to exactly 64 KiB (valid JSON), then more spaces to 365 KB."""
    return body.ljust(64 * 1024).ljust(365 * 1024)


def error_details(answer: Answer) -> str:
    try:
        return json.dumps(answer.json()["error"].get("details"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""


def details_name(field_name: str) -> Callable[[Answer], list[str]]:
    def check(answer: Answer) -> list[str]:
        return [] if field_name in error_details(answer) else [f"error.details does not name {field_name!r}: {answer}"]

    return check


def first_rejected_is(index: int) -> Callable[[Answer], list[str]]:
    def check(answer: Answer) -> list[str]:
        try:
            rejected = answer.json()["rejected"]
            if rejected and rejected[0]["index"] == index:
                return []
        except (ValueError, KeyError, TypeError, IndexError):
            pass
        return [f"rejected[0].index is not {index}: {answer}"]

    return check


def dropped_for_privacy(answer: Answer) -> list[str]:
    problems = []
    try:
        if not answer.json().get("dropped_for_privacy", 0) > 0:
            problems.append(f"no dropped_for_privacy > 0: {answer}")
    except (ValueError, AttributeError, TypeError):
        problems.append(f"not a JSON object: {answer}")
    if answer.headers_named("set-cookie"):
        problems.append(f"sets a cookie although it must not: {answer.headers_named('set-cookie')}")
    return problems


def no_allow_origin(answer: Answer) -> list[str]:
    value = answer.header("access-control-allow-origin")
    return [] if value is None else [f"Access-Control-Allow-Origin: {value}"]


def allows_origin(origin: str) -> Callable[[Answer], list[str]]:
    def check(answer: Answer) -> list[str]:
        problems = [] if answer.header("access-control-allow-origin") == origin else [f"Access-Control-Allow-Origin is {answer.header('access-control-allow-origin')!r}"]
        if not 200 <= answer.status < 300:
            problems.append(f"preflight answered {answer.status}")
        return problems

    return check


def names_ssn_without_its_value(answer: Answer) -> list[str]:
    problems = [] if "ssn" in error_details(answer) else [f"error.details does not name ssn: {answer}"]
    if SSN.encode() in answer.raw:
        problems.append("the answer repeats the SSN value")
    return problems


def retry_after(answer: Answer) -> list[str]:
    return [] if answer.header("retry-after") else ["no Retry-After header"]


ROWS = [
    Row(
        "latin1-user-agent", 202, ("both",),
        events=lambda: [make_event("page_view")],
        headers=(("User-Agent", b"Mozilla/5.0 (caf\xe9)"),),
        forwarded_headers={"user-agent": "Mozilla/5.0 (caf)"},
    ),
    Row(
        "utf8-bytes-in-referer", 202, ("both",),
        events=lambda: [make_event("page_view")],
        headers=(("Referer", b"https://shop.example/caf\xc3\xa9"),),
        forwarded_headers={"referer": "https://shop.example/caf%C3%A9"},
    ),
    Row("lone-surrogate-in-product-id", 422, ("refused",), events=lambda: [product("KEY\ud800")], check=details_name("product_id")),
    Row("lone-surrogate-in-type", 422, ("refused",), events=lambda: [make_event("page_view\ud800")], check=details_name("type")),
    Row(
        "lone-surrogate-in-second-of-two", 202, ("both", "refused"),
        events=lambda: [product("KEY-1"), product("KEY\ud800")],
        check=first_rejected_is(1),
    ),
    Row("10000-nested-brackets", 400, body=nested_brackets),
    Row("5000-digit-ts", 400, ("refused",), events=lambda: [make_event(ts="@ts@")], body=replace("@ts@", b"9" * 5000)),
    Row("nan-width", 400, ("refused",), events=lambda: [make_event(document_width="@w@")], body=replace("@w@", b"NaN")),
    Row("infinity-width", 400, ("refused",), events=lambda: [make_event(document_width="@w@")], body=replace("@w@", b"Infinity")),
    Row("1e400-width", 400, ("refused",), events=lambda: [make_event(document_width="@w@")], body=replace("@w@", b"1e400")),
    Row("invalid-utf8-body", 400, ("refused",), events=lambda: [product("@bad@")], body=replace("@bad@", b'"KEY\xff\xfe"')),
    Row("365kb-chunked-body", 413, ("refused",), events=lambda: [make_event("page_view")], body=padded_past_the_limit, chunked=True),
    Row("sec-gpc", 202, ("refused",), events=lambda: [make_event("page_view")], headers=(("Sec-GPC", "1"),), check=dropped_for_privacy),
    Row(
        "consent-site-without-consent", 202, ("refused",),
        events=lambda: [make_event("page_view")], site=CONSENT_SITE, origin=ORIGIN, check=dropped_for_privacy,
    ),
    Row(
        "consent-site-with-consent", 202, ("commerce",),
        events=lambda: [make_event("page_view")], site=CONSENT_SITE, origin=ORIGIN, envelope={"consent": True},
    ),
    Row("foreign-origin", 403, ("refused",), events=lambda: [make_event("page_view")], origin="https://evil.example", check=no_allow_origin),
    Row("origin-null", 403, ("refused",), events=lambda: [make_event("page_view")], origin="null", check=no_allow_origin),
    Row(
        "preflight-from-foreign-origin", None, method="OPTIONS", origin="https://evil.example",
        headers=(("Access-Control-Request-Method", "POST"),), check=no_allow_origin,
    ),
    Row(
        "preflight-from-shop", None, method="OPTIONS",
        headers=(("Access-Control-Request-Method", "POST"),), check=allows_origin(ORIGIN),
    ),
    Row(
        "account-with-ssn", 422, ("refused",),
        events=lambda: [make_event("User Login", props={"account": ACCOUNT_WITH_SSN})], check=names_ssn_without_its_value,
    ),
    Row("account-without-personal-data", 202, ("commerce",), events=lambda: [make_event("User Login", props={"account": PLAIN_ACCOUNT})]),
    Row("50-web-events-in-one-request", 429, ("refused",) * 50, events=lambda: [make_event("User Login") for _ in range(50)], check=retry_after),
    Row("control", 202, ("both", "both"), events=lambda: [make_event("page_view"), product("KEY-1")]),
]


def send_row(stack: ServeStack, row: Row, events: list[dict]) -> Answer:
    headers: list[tuple[str, str | bytes]] = []
    if row.origin is not None:
        headers.append(("Origin", row.origin))
    body = b""
    if row.method == "POST":
        headers.append(TEXT_PLAIN)
        body = json.dumps({"site": row.site, **row.envelope, "events": events}).encode()
        if row.body is not None:
            body = row.body(body)
    headers.extend(row.headers)
    return http_exchange(stack.url, row.method, "/collect", headers, body, chunked=row.chunked, timeout=15)


def error_shape_problems(answer: Answer) -> list[str]:
    """Why a 4xx body is not ``{"error": {"code": <status>, "message": str, ...}}``."""
    try:
        error = answer.json()["error"]
        if error["code"] == answer.status and isinstance(error["message"], str):
            return []
    except (ValueError, KeyError, TypeError):
        pass
    return [f"4xx body is not {{'error': {{'code': {answer.status}, 'message': str}}}}: {answer.body[:300]!r}"]


def fate_problems(stack: ServeStack, row: Row, event: dict, fate: str, refused_after: float) -> list[str]:
    """Whether the event reached its end state; waits only as long as that state needs."""
    event_id = event["id"]
    if fate == "refused":
        time.sleep(max(0.0, refused_after - time.monotonic()))
        reached = depict_requests(stack, event_id) + commerce_requests(stack, row.site, event_id)
        return [f"event {event_id} was to be refused, but reached {whereabouts(stack, row.site, event_id)}"] if reached else []
    if fate == "dead":
        if wait_until(lambda: any(letter.reason for letter in dead_letters_of(stack, event_id)), DEAD_LETTER_SECONDS):
            return []
        return [f"event {event_id} not dead-lettered within {DEAD_LETTER_SECONDS} s: {whereabouts(stack, row.site, event_id)}"]
    problems = []
    for destination in ("depict", "commerce") if fate == "both" else (fate,):
        def arrived() -> list[ReceivedRequest]:
            return delivered(depict_requests(stack, event_id) if destination == "depict" else commerce_requests(stack, row.site, event_id))

        if not wait_until(arrived, DELIVERY_SECONDS):
            problems.append(f"event {event_id} not delivered to {destination} within {DELIVERY_SECONDS} s: {whereabouts(stack, row.site, event_id)}")
            continue
        if destination == "depict":
            request = arrived()[0]
            for name, value in row.forwarded_headers.items():
                if request.headers.get(name) != value:
                    problems.append(f"Depict got {name}: {request.headers.get(name)!r}, not {value!r}")
    return problems


def serve_log_since(stack: ServeStack, offset: int) -> str:
    with open(stack.serve_log, "rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", "replace")


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_what_browsers_and_strangers_send(stack: ServeStack, observations: list[Observation], row: Row) -> None:
    """Each request gets its status and error shape, each event its end state, and an honest event still flows after it."""
    events = row.events()
    assert len(events) == len(row.fates), "a row names one fate per event"
    log_offset = stack.serve_log.stat().st_size
    answer = send_row(stack, row, events)
    canary = send_honest_event(stack)
    refused_after = time.monotonic() + REFUSED_AFTER_SECONDS

    problems = []
    if row.status is None:
        if not 0 < answer.status < 500:
            problems.append(f"answered {answer}")
    elif answer.status != row.status:
        problems.append(f"expected {row.status}, answered {answer}")
    if 400 <= answer.status < 500:
        problems += error_shape_problems(answer)
    problems += row.check(answer)
    for event, fate in zip(events, row.fates):
        problems += fate_problems(stack, row, event, fate, refused_after)
    if canary.seconds is None:
        problems.append(canary.detail)
    if "Traceback" in serve_log_since(stack, log_offset):
        problems.append(f"the serve log has a Traceback:\n{serve_log_since(stack, log_offset)[-2000:]}")

    fates = sorted({whereabouts(stack, row.site, event["id"]) for event in events})
    observations.append(Observation(row.id, str(answer.status or answer.error), "; ".join(fates) or "-", canary.detail, len(problems)))
    assert not problems, "\n".join(problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else []))


def test_a_flood_of_lone_surrogates_is_refused_cheaply(stack: ServeStack, observations: list[Observation]) -> None:
    """300 lone-surrogate requests in a row are all 422, queue nothing, barely touch the worker log, and honest events still flow."""
    log_size = stack.worker_log.stat().st_size
    events = [product("KEY\ud800") for _ in range(300)]
    statuses: list[int] = []
    with httpx.Client(timeout=10, headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN}) as client:
        for event in events:
            statuses.append(client.post(f"{stack.url}/collect", content=json.dumps({"site": SITE, "events": [event]})).status_code)
    canary = send_honest_event(stack)
    time.sleep(REFUSED_AFTER_SECONDS)
    growth = stack.worker_log.stat().st_size - log_size
    reached = [event["id"] for event in events if depict_requests(stack, event["id"]) or commerce_requests(stack, SITE, event["id"])]

    counts = {status: statuses.count(status) for status in sorted(set(statuses))}
    problems = [] if counts == {422: 300} else [f"answers: {counts}, not 300 x 422"]
    if canary.seconds is None:
        problems.append(canary.detail)
    if reached:
        problems.append(f"{len(reached)} of the flood's events reached a vendor")
    if growth > 100_000:
        problems.append(f"the worker log grew by {growth} bytes:\n{ServeStack.tail(stack.worker_log, 1500)}")
    observations.append(Observation("300-lone-surrogate-requests", str(counts), f"{len(reached)} reached a vendor; worker log +{growth} B", canary.detail, len(problems)))
    assert not problems, "\n".join(problems)


# Secrets


def redis_values(stack: ServeStack) -> Iterator[tuple[bytes, bytes]]:
    """Every key with each of its values (hash fields, list items, set and zset members, stream fields)."""
    redis = stack.redis
    for key in redis.scan_iter(count=1000):
        kind = redis.type(key).decode()
        yield key, key
        if kind == "string":
            yield key, redis.get(key) or b""
        elif kind == "hash":
            for name, value in redis.hgetall(key).items():
                yield key, name
                yield key, value
        elif kind == "list":
            for value in redis.lrange(key, 0, -1):
                yield key, value
        elif kind == "set":
            for value in redis.smembers(key):
                yield key, value
        elif kind == "zset":
            for value, _ in redis.zrange(key, 0, -1, withscores=True):
                yield key, value
        elif kind == "stream":
            for _, entry in redis.xrange(key, count=10_000):
                for name, value in entry.items():
                    yield key, name
                    yield key, value
        else:
            yield key, redis.dump(key) or b""


def readable_forms(value: bytes) -> list[bytes]:
    """The value, and its zlib-decompressed text when it is compressed (outbox entries, RQ job data)."""
    forms = [value]
    try:
        inflated = zlib.decompress(value)
    except zlib.error:
        return forms
    forms.append(inflated)
    try:
        forms.append(json.dumps(decode_entry(value)).encode())  # an outbox entry, \\u-escapes undone
    except (ValueError, TypeError):
        pass
    return forms


def test_no_secret_or_ssn_leaks(stack: ServeStack, observations: list[Observation]) -> None:
    """After all that traffic (and one more account with an SSN), no log, Redis value or dead letter holds an API key or the SSN."""
    http_exchange(
        stack.url, "POST", "/collect", [("Origin", ORIGIN), TEXT_PLAIN],
        json.dumps({"site": SITE, "events": [make_event("User Login", props={"account": ACCOUNT_WITH_SSN})]}).encode(),
    )  # fmt: skip
    canary = send_honest_event(stack)
    found = []
    for name, log in (("serve log", stack.serve_log), ("worker log", stack.worker_log)):
        text = log.read_bytes()
        found += [f"{name}: {secret}" for secret in SECRETS if secret.encode() in text]
    keys = 0
    for key, value in redis_values(stack):
        keys += 1
        for form in readable_forms(value):
            found += [f"redis {key.decode(errors='replace')}: {secret}" for secret in SECRETS if secret.encode() in form]
    for letter in stack.dead_letters():
        text = json.dumps(letter.__dict__)
        found += [f"dead letter {letter.delivery.get('id')}: {secret}" for secret in SECRETS if secret in text]

    observations.append(Observation("no-secret-or-ssn-leaks", f"{keys} redis values read", f"{len(found)} leaks", canary.detail, len(found)))
    assert not found, "\n".join(sorted(set(found)))
