"""``/v1/...``: Segment's and RudderStack's ingestion API, so their clients need only a new host name.

Each request is read (at most 500 KB, gzip or not), its write key selects
the site, its messages are checked and turned into inbound events
(``segment.py``), and from there they take ``/collect``'s own path
(``inbound/intake.py``). Answers are what the clients expect of Segment's API:
``200 {"success": true}`` with our counts, ``400`` with a ``code`` and a
``message`` for a request that cannot be used (over 500 KB, a message over
32 KB, not JSON, no valid message), ``401`` for an unknown write key; only a
Redis outage is a ``503`` (which the clients retry).

Every refusal (400, 401, 429) is logged as one line with its reason and
the write key's name, its place in the configuration
(``sites.my_store.sources.write_keys[0]``; an unknown key by a fingerprint),
never the key itself; at most so many lines a minute (``errors.RefusalLog``).
The settings document and the source config answer for browser write keys
only: a server key is a secret, and they would echo it.

A *browser* write key (``sources.write_keys``) is public: its requests are
enriched from the request like ``/collect``'s (IP, User-Agent and Referer
from the headers, not from ``context``), Global Privacy Control and the
site's consent rule apply, and so do the per-request and per-visitor
budgets. A *server* write key (``sources.server_write_keys``, Basic auth
only) is a shop's backend, reporting for its visitors: their IP,
User-Agent and page are taken from each message's ``context``.

Where the site drops bots, a message is judged on the User-Agent that
speaks for its visitor: the request's for a browser key, the message's
``context.userAgent`` for a server key (a backend's own, such as
``analytics-python``, says nothing of the visitor). A dropped message is
answered ``200`` like the others, counted under ``dropped_as_bot``.

RudderStack's beacon path, ``/beacon/v1/batch``, is named by the ad-block
lists (EasyPrivacy's ``/beacon/v1/batch?``). ``/v1/batch`` takes the very
same request (the write key in the query, a ``text/plain`` body, no
``Authorization``), so a page that sends its own beacons can use it; the
SDK itself always appends ``/beacon/v1/batch`` to its ``dataPlaneUrl``
(docs/segment-rudderstack.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from flask_limiter import RateLimitExceeded
from marshmallow import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from collector.config import defaults
from collector.config.schema import Site
from collector.inbound.collect import check_origin, dropped_fields, grant_cors, keep_refusal
from collector.inbound.enrich import (
    VISITOR_ID_PATTERN,
    RequestContext,
    context_from_request,
    forwardable_host,
    forwardable_ip,
    forwardable_url,
    forwardable_user_agent,
    global_privacy_control,
)
from collector.errors import BadRequest, BudgetExceeded, CollectorError, error_body, log_refusal, rate_limit_refusal
from collector.extensions import collector_state
from collector.inbound.intake import VisitorEvents, bot_sent, check_batch, check_web_event_budget, count_outcome, queue_batch, web_events_in, without_repeats
from collector.inbound.request_body import may_hold_lone_surrogates, parse_json, read_body
from collector.inbound.sources import rudderstack, segment

bp = Blueprint("sources", __name__)

# Segment's short paths (analytics-next) and long ones (its HTTP API, RudderStack).
_CALL_PATHS = {
    "t": "track", "p": "page", "s": "screen", "i": "identify", "g": "group", "a": "alias",
    **{call: call for call in segment.CALLS},
}  # fmt: skip
_BATCH_PATHS = ("/v1/b", "/v1/batch", rudderstack.BEACON_PATH)
_ALLOWED_HEADERS = "Content-Type, Authorization, AnonymousId, SentAt"
INGEST_ENDPOINTS = frozenset({"sources.single", "sources.batch"})


class UnknownWriteKey(CollectorError):
    code = 401
    message = "unknown write key"


@dataclass(frozen=True)
class Sender:
    """Whom a request comes from: the site its write key selects, and whether it is the shop's backend."""

    site: Site
    write_key: str
    is_server: bool


def write_key_index(sites: Mapping[str, Site]) -> dict[str, tuple[Site, bool]]:
    """Every configured write key -> (its site, whether it is a server key); made once per app."""
    index: dict[str, tuple[Site, bool]] = {}
    for site in sites.values():
        index.update({key: (site, False) for key in site.sources.write_keys})
        index.update({key: (site, True) for key in site.sources.server_write_keys})
    return index


def _basic_auth_user() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")[0] or None
    except (binascii.Error, UnicodeDecodeError):
        return None


def key_name(key: str | None) -> str:
    """How the logs name a write key: its place in the configuration, or a fingerprint; never the key."""
    if not key:
        return "none read"
    found = collector_state().write_keys.get(key)
    if found is None:
        return "unknown, fingerprint " + hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    site, is_server = found
    listed = "server_write_keys" if is_server else "write_keys"
    return f"sites.{site.name}.sources.{listed}[{getattr(site.sources, listed).index(key)}]"


def _presented_key() -> str | None:
    """The write key the request presented, as far as it was read before it was refused."""
    return g.get("write_key") or _basic_auth_user() or request.args.get("writeKey")


def _sender(body: dict[str, Any] | None) -> Sender:
    auth_user = _basic_auth_user()
    body_key = body.get("writeKey") if body else None
    key = auth_user or (body_key if isinstance(body_key, str) else None) or request.args.get("writeKey")
    if not key:
        raise UnknownWriteKey("no write key: send it as the Basic auth user, or as writeKey in the body")
    g.write_key = key
    found = collector_state().write_keys.get(key)
    if found is None:
        raise UnknownWriteKey()
    site, is_server = found
    if is_server and auth_user != key:
        raise UnknownWriteKey("a server write key is accepted only as the Basic auth user")
    g.site_name = site.name
    if not is_server:
        check_origin(site)
    return Sender(site, key, is_server)


def _read_messages_body() -> Any:
    """The body as JSON: at most 500 KB as sent and once inflated, gzip when it says so."""
    try:
        raw = read_body(request, defaults.MAX_SOURCE_BATCH_BYTES)
    except RequestEntityTooLarge:
        raise BadRequest(f"a batch may be at most {defaults.MAX_SOURCE_BATCH_BYTES // 1024} KB") from None
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        raw = _gunzip(raw)
    g.screen_text = may_hold_lone_surrogates(raw)
    return parse_json(raw)


def _gunzip(raw: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        text = inflater.decompress(raw, defaults.MAX_SOURCE_BATCH_BYTES + 1)
    except zlib.error:
        raise BadRequest("the body says Content-Encoding: gzip but is not gzip") from None
    if len(text) > defaults.MAX_SOURCE_BATCH_BYTES or inflater.unconsumed_tail:
        raise BadRequest(f"a batch may be at most {defaults.MAX_SOURCE_BATCH_BYTES // 1024} KB once inflated")
    return text


def _stable_visitor_id(value: str) -> str:
    """A visitor id for an anonymousId or userId that is not one already (a UUID is)."""
    return value if VISITOR_ID_PATTERN.match(value) else "v_" + hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=15).hexdigest()


def _server_context(message: dict[str, Any], received_at: float) -> RequestContext:
    """A backend reports for its visitor: who that was is in the message's ``context``."""
    context = message.get("context") or {}
    page = context.get("page") or {}
    return RequestContext(
        client_ip=forwardable_ip(context.get("ip")),
        user_agent=forwardable_user_agent(context.get("userAgent")),
        referer=forwardable_url(page.get("url")),
        host=forwardable_host(request.host),
        received_at=received_at,
        visitor_id=_stable_visitor_id(message.get("anonymousId") or message["userId"]),
        visitor_cookie_was_set=False,
    )


def _browser_context(message: dict[str, Any]) -> RequestContext:
    """A browser's request: enriched from its headers exactly as ``/collect``'s are; the visitor is the message's."""
    if "browser_context" not in g:
        g.browser_context = context_from_request(request, collector_state().config.settings.cookie.name, None)
    context: RequestContext = g.browser_context
    if context.visitor_cookie_was_set:
        return context
    return replace(context, visitor_id=_stable_visitor_id(message.get("anonymousId") or message["userId"]))


def _privacy_forbids(sender: Sender, message: dict[str, Any]) -> bool:
    site = sender.site
    if not sender.is_server and site.honor_gpc and global_privacy_control(request):
        return True
    return site.require_consent and not (segment.consent_given(message) or rudderstack.consent_given(message))


@dataclass
class _Converted:
    """A request's messages as inbound events, with where each event came from."""

    raw_events: list[dict[str, Any]]
    message_of_event: list[int]
    contexts: list[RequestContext]
    errors: dict[int, Any]
    dropped: Counter[str]  # events not queued, by reason (privacy, bot)


def _convert(sender: Sender, raw_messages: list[Any]) -> _Converted:
    messages, errors = segment.load_messages([rudderstack.as_segment_message(message) for message in raw_messages])
    received_at = g.received_at
    converted = _Converted([], [], [], errors, Counter())
    make_context: Callable[[dict[str, Any]], RequestContext] = (
        (lambda message: _server_context(message, received_at)) if sender.is_server else _browser_context
    )
    for index, message in sorted(messages.items()):
        try:
            events = segment.inbound_events(message, sender.site.sources.event_types, received_at)
        except ValidationError as error:
            converted.errors[index] = error.messages
            continue
        if _privacy_forbids(sender, message):
            converted.dropped["privacy"] += len(events)
            continue
        context = make_context(message)
        if bot_sent(sender.site, context.user_agent):
            converted.dropped["bot"] += len(events)
            continue
        for event in events:
            converted.raw_events.append(event)
            converted.message_of_event.append(index)
            converted.contexts.append(context)
    return converted


def _rejections(raw_messages: list[Any], converted: _Converted, rejected_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Refused messages by their index in the request, with the reasons (by message field or by our event field)."""
    errors = dict(converted.errors)
    for item in rejected_events:
        errors.setdefault(converted.message_of_event[item["index"]], item["errors"])
    rejected = []
    for index in sorted(errors):
        message = raw_messages[index]
        message_id = message.get("messageId") if isinstance(message, dict) else None
        rejected.append({"index": index, "messageId": message_id if isinstance(message_id, str) else None, "errors": errors[index]})
    return rejected


def _by_visitor(events: list[dict[str, Any]], contexts: dict[str, RequestContext]) -> list[VisitorEvents]:
    """Events grouped by the visitor they are for: one Depict request carries one visitor's headers."""
    groups: dict[RequestContext, list[dict[str, Any]]] = {}
    for event in events:
        groups.setdefault(contexts[event["id"]], []).append(event)
    return [VisitorEvents(context, grouped) for context, grouped in groups.items()]


def _web_event_messages(site: Site, events: list[dict[str, Any]], message_of: dict[str, int]) -> int:
    """Messages of the request that reach Commerce: an order is one message, however many products it expands into."""
    return len({message_of[event["id"]] for event in events if web_events_in(site, [event])})


def _check_request_budget(site: Site, events: list[dict[str, Any]], message_of: dict[str, int]) -> None:
    """Over the per-request Web Event budget is a 400 here: a client retries a 429, and this batch will never fit."""
    try:
        check_web_event_budget(site, _web_event_messages(site, events, message_of), len(events))
    except BudgetExceeded as over:
        raise BadRequest(f"{over.message}: send smaller batches", details=over.details) from None


def take_messages(raw_messages: list[Any]) -> tuple[Response, int]:
    sender: Sender = g.sender
    site = sender.site
    converted = _convert(sender, raw_messages)
    events, rejected_events = check_batch(site, converted.raw_events, g.get("screen_text", False))
    rejected = _rejections(raw_messages, converted, rejected_events)
    g.rejected = rejected
    dropped = sum(converted.dropped.values())
    if not events and not dropped:
        count_outcome(site, 0, 0, len(rejected))
        raise BadRequest("no message was valid", details={"rejected": rejected})
    contexts = {converted.raw_events[i]["id"]: converted.contexts[i] for i in range(len(converted.raw_events))}
    message_of = {event["id"]: converted.message_of_event[i] for i, event in enumerate(converted.raw_events)}
    unique = without_repeats(events)
    accepted = 0
    if unique:
        visitors = _by_visitor(unique, contexts)
        if not sender.is_server:
            _check_request_budget(site, unique, message_of)
        accepted = queue_batch(site, visitors, browser=not sender.is_server)
    duplicates = len(events) - accepted
    count_outcome(site, accepted, duplicates, len(rejected), converted.dropped)
    body: dict[str, Any] = {"success": True, "accepted": accepted, "duplicates": duplicates, "rejected": rejected}
    body.update(dropped_fields(converted.dropped))
    return jsonify(body), 200


def _begin(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    g.sender = _sender(body)
    return body


@bp.before_request
def _note_arrival() -> None:
    """The arrival time, and Segment's batch limit in place of ``/collect``'s 64 KiB (``MAX_CONTENT_LENGTH``).

    The app-wide limit would refuse a server library's batch of 100 messages
    (about 110 KB) when it comes with a ``Content-Length``, and not when it
    comes chunked; here both are read up to 500 KB.
    """
    g.received_at = time.time()
    request.max_content_length = defaults.MAX_SOURCE_BATCH_BYTES


@bp.post("/v1/<any(t, p, s, i, g, a, track, page, screen, identify, group, alias):path>")
def single(path: str) -> tuple[Response, int]:
    """One message; its call is the path's when the message does not say it (``/v1/t`` is a track)."""
    body = _begin(_read_messages_body())
    body.setdefault("type", _CALL_PATHS[path])
    return take_messages([body])


@bp.post("/v1/b")
@bp.post("/v1/batch")
@bp.post(rudderstack.BEACON_PATH)
def batch() -> tuple[Response, int]:
    body = _begin(_read_messages_body())
    messages = body.get("batch")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("a batch needs 'batch': a list of messages")
    return take_messages(messages)


def _browser_key(found: tuple[Site, bool] | None) -> Site:
    """The site of a browser write key; a server key is secret, so no public document ever names it."""
    if found is None or found[1]:
        raise UnknownWriteKey()
    return found[0]


@bp.get("/v1/projects/<write_key>/settings")
def segment_settings(write_key: str) -> tuple[Response, int]:
    """The settings analytics-next loads from its ``cdnURL``: this collector as its only destination.

    The ``apiHost`` it names is the request's host as the trusted proxy hops
    report it (``ProxyFix``; with none, the ``Host`` header), and must be a
    host name. The document may be kept by the browser, never by a shared
    cache: one visitor's request cannot choose what another is sent.
    """
    g.write_key = write_key
    _browser_key(collector_state().write_keys.get(write_key))
    host = forwardable_host(request.host)
    if host is None:
        raise BadRequest("the request's host is not a host name")
    response = jsonify(segment.settings_document(write_key, f"{host}{request.script_root}/v1", request.scheme))
    response.headers["Cache-Control"] = "private, max-age=300"
    return response, 200


@bp.get("/sourceConfig")
@bp.get("/sourceConfig/")
def rudderstack_source_config() -> tuple[Response, int]:
    """The source config RudderStack's browser SDK loads from its ``configUrl``: for browser write keys only."""
    sender = _sender(None)
    if sender.is_server:
        raise UnknownWriteKey()
    response = jsonify(rudderstack.source_config(sender.site.name, sender.write_key))
    response.headers["Cache-Control"] = "private, max-age=300"
    return response, 200


@bp.route("/v1/<path:_>", methods=["OPTIONS"])
@bp.route("/sourceConfig", methods=["OPTIONS"])
@bp.route("/sourceConfig/", methods=["OPTIONS"])
@bp.route(rudderstack.BEACON_PATH, methods=["OPTIONS"])
def preflight(_: str = "") -> tuple[str, int]:
    return "", 204


@bp.after_request
def _allow_site_origin(response: Response) -> Response:
    """CORS for pages of an origin some site lists; the SDKs send Authorization, AnonymousId and SentAt headers."""
    origin = request.headers.get("Origin")
    if origin and origin in collector_state().allowed_origins:
        grant_cors(response, origin, allow_headers=_ALLOWED_HEADERS, allow_methods="GET, POST, OPTIONS")
    elif origin:
        response.vary.add("Origin")
    return response


@bp.after_request
def _keep_refusal(response: Response) -> Response:
    """Refused requests and messages, for the console's bad rows (reasons only, never the body)."""
    if request.endpoint in INGEST_ENDPOINTS:
        keep_refusal(response, accepted_status=200, unit="messages")
    return response


def _segment_error(error: CollectorError) -> tuple[Response, int, dict[str, str]]:
    """Segment's error shape (``code``, ``message``, as its libraries read them), with ours beside it; a refusal is logged."""
    if error.code < 500:
        key = _presented_key()
        log_refusal(error.code, error.message, key_name(key), _SETTINGS_PATH if request.endpoint == "sources.segment_settings" else None)
    body = {"success": False, "code": _ERROR_CODES.get(error.code, "error"), "message": error.message}
    body.update(error_body(error.code, error.message, error.details))
    return jsonify(body), error.code, error.headers


def _rate_limited(_: RateLimitExceeded) -> tuple[Response, int, dict[str, str]]:
    return _segment_error(rate_limit_refusal())


_SETTINGS_PATH = "/v1/projects/<write key>/settings"  # as logged: the path itself holds the key
_ERROR_CODES = {400: "invalid_request", 401: "invalid_write_key", 403: "forbidden", 429: "rate_limited", 503: "unavailable"}
bp.register_error_handler(CollectorError, _segment_error)
bp.register_error_handler(RateLimitExceeded, _rate_limited)
