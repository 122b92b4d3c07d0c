"""``POST /collect``: what the snippet sends, checked, enriched, mapped and queued.

The answer comes only after the deliveries are in Redis: ``202`` with the
counts, ``422`` when no event was valid, ``400`` when the request itself is
unusable, ``503`` with ``Retry-After`` when Redis cannot take them.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import ValidationError
from redis import RedisError

from collector import defaults, metrics
from collector.config import Site
from collector.enrich import RequestContext, context_from_request
from collector.errors import BadRequest, EventsRejected, OriginNotAllowed, QueueUnavailable, UnknownSite
from collector.extensions import collector_state
from collector.event_check import check_events
from collector.inbound import load_envelope
from collector.routing import build_deliveries

log = logging.getLogger(__name__)
bp = Blueprint("collect", __name__)

# A batch can meet ids claimed by a concurrent request between our tries;
# three tries settle any realistic race.
_ENQUEUE_TRIES = 3


def _read_json() -> Any:
    """The body as JSON whatever its Content-Type: sendBeacon sends ``text/plain``."""
    raw = request.get_data(cache=False)
    if not raw:
        raise BadRequest("the body is empty; send a JSON object with 'site' and 'events'")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"the body is not JSON: {error}") from None


def _site_named(name: str) -> Site:
    site = collector_state().config.sites.get(name)
    if site is None:
        raise UnknownSite(f"unknown site {name!r}")
    return site


def _check_origin(site: Site) -> None:
    origin = request.headers.get("Origin")
    if origin and site.origins and origin not in site.origins:
        raise OriginNotAllowed(f"origin {origin!r} is not configured for site {site.name!r}")


def _without_repeats(events: list[dict[str, Any]], seen: set[str]) -> list[dict[str, Any]]:
    unique = []
    for event in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            unique.append(event)
    return unique


def _enqueue(site: Site, events: list[dict[str, Any]], context: RequestContext) -> int:
    """Queue the events' deliveries; return how many events were new."""
    outbox = collector_state().outbox
    for _ in range(_ENQUEUE_TRIES):
        if not events:
            return 0
        deliveries = build_deliveries(site, events, context)
        if not deliveries:
            return len(events)
        try:
            already_seen = set(outbox.try_enqueue(site.name, [event["id"] for event in events], deliveries))
        except RedisError as error:
            log.warning("redis unavailable while queueing for site %s: %s", site.name, type(error).__name__)
            raise QueueUnavailable(headers={"Retry-After": str(defaults.RETRY_AFTER_WHEN_UNAVAILABLE_SECONDS)}) from None
        if not already_seen:
            return len(events)
        events = [event for event in events if event["id"] not in already_seen]
    raise QueueUnavailable(headers={"Retry-After": "1"})


def _set_visitor_cookie(response: Response, context: RequestContext) -> None:
    cookie = collector_state().config.settings.cookie
    response.set_cookie(
        cookie.name,
        context.visitor_id,
        max_age=cookie.max_age_days * 86400,
        domain=cookie.domain,
        secure=request.is_secure,
        httponly=True,
        samesite="Lax",
    )


def allow_site_origin(response: Response) -> Response:
    """Let the site's pages read our answers, Retry-After included, and send the visitor cookie along.

    The collector usually sits on another origin than the page
    (``collect.my-store.example``), where a browser hides every response
    header not exposed here: without it the snippet could not honour
    ``Retry-After`` on a 429 or 503.
    """
    origin = request.headers.get("Origin")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        response.headers["Access-Control-Max-Age"] = "86400"
        response.vary.add("Origin")
    return response


bp.after_request(allow_site_origin)


@bp.after_request
def _count_answer(response: Response) -> Response:
    if request.endpoint == "collect.collect":
        metrics.REQUESTS.labels(str(response.status_code)).inc()
    return response


@bp.route("/collect", methods=["OPTIONS"])
def collect_preflight() -> tuple[str, int]:
    return "", 204


@bp.post("/collect")
def collect() -> tuple[Response, int]:
    started = time.perf_counter()
    settings = collector_state().config.settings
    try:
        envelope = load_envelope(_read_json(), settings.max_events_per_batch)
    except ValidationError as error:
        raise BadRequest("the request is not a batch of events", details=error.messages) from None
    site = _site_named(envelope["site"])
    _check_origin(site)
    events, rejected = check_events(envelope["events"])
    if not events:
        metrics.EVENTS.labels(site.name, "rejected").inc(len(rejected))
        raise EventsRejected(details={"rejected": rejected})

    unique = _without_repeats(events, set())
    context = context_from_request(request, settings.cookie.name, unique[0].get("anonymous_id"))
    if site.honor_gpc and context.global_privacy_control:
        accepted, dropped = 0, len(unique)
    else:
        accepted, dropped = _enqueue(site, unique, context), 0
    duplicates = len(events) - accepted - dropped

    metrics.EVENTS.labels(site.name, "accepted").inc(accepted)
    metrics.EVENTS.labels(site.name, "duplicate").inc(duplicates)
    metrics.EVENTS.labels(site.name, "rejected").inc(len(rejected))
    metrics.EVENTS.labels(site.name, "dropped_gpc").inc(dropped)
    metrics.LATENCY.observe(time.perf_counter() - started)

    body = {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}
    if dropped:
        body["dropped_for_privacy"] = dropped
    response = jsonify(body)
    _set_visitor_cookie(response, context)
    return response, 202


@bp.get("/sites/<site_name>/settings.json")
def site_settings(site_name: str) -> tuple[Response, int]:
    """What the snippet needs to know before it may send: the site's privacy policy."""
    site = _site_named(site_name)
    response = jsonify({"require_consent": site.require_consent, "honor_gpc": site.honor_gpc})
    response.headers["Cache-Control"] = "public, max-age=300"
    return response, 200
