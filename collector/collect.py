"""``POST /collect``: what the snippet sends, checked, enriched, mapped and queued.

The answer comes only after the deliveries are in Redis: ``202`` with the
counts, ``422`` when no event was valid, ``400`` when the request itself is
unusable (``request_body.py``), ``403`` for a page of another origin,
``413`` for a body over the limit, ``429`` over a budget of the site's,
``503`` with ``Retry-After`` when Redis cannot take them.

A visitor's privacy choice is enforced here, not only in the snippet: with
Global Privacy Control on (where the site honours it), or on a site that
requires consent when the snippet does not say it was given, nothing is
queued and no cookie is set; the events are counted as dropped.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from marshmallow import ValidationError
from redis import RedisError

from collector import defaults, metrics
from collector.account_fields import refused_account_fields
from collector.config import Site
from collector.enrich import RequestContext, context_from_request, global_privacy_control
from collector.errors import BadRequest, BudgetExceeded, EventsRejected, OriginNotAllowed, QueueUnavailable, UnknownSite
from collector.event_check import check_events
from collector.extensions import collector_state
from collector.inbound import load_envelope
from collector.live_tail import record_refusal, tail_entry
from collector.queue import Budget, OverBudget, minute_budget
from collector.request_body import may_hold_lone_surrogates, parse_json, read_body
from collector.routing import build_deliveries, routes_to_commerce

log = logging.getLogger(__name__)
bp = Blueprint("collect", __name__)

# A batch can meet ids claimed by a concurrent request between our tries;
# three tries settle any realistic race.
_ENQUEUE_TRIES = 3


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


def _budgets(site: Site, context: RequestContext) -> list[Budget]:
    """The per-minute budgets a batch is charged to: the site's, and its visitor's."""
    limits = site.limits
    return [
        minute_budget(f"{site.name}:site", limits.events_per_minute, "for the whole site"),
        minute_budget(f"{site.name}:visitor:{context.visitor_id}", limits.visitor_events_per_minute, "per visitor"),
    ]


def _enqueue(site: Site, events: list[dict[str, Any]], context: RequestContext) -> int:
    """Queue the events' deliveries; return how many events were new."""
    outbox = collector_state().outbox
    budgets = _budgets(site, context)
    for _ in range(_ENQUEUE_TRIES):
        if not events:
            return 0
        deliveries = build_deliveries(site, events, context)
        if not deliveries:
            return len(events)
        try:
            event_ids = [event["id"] for event in events]
            already_seen = set(outbox.try_enqueue(site.name, event_ids, deliveries, budgets, tail_entry(site.name, events)))
        except OverBudget as over:
            metrics.EVENTS.labels(site.name, "over_budget").inc(len(events))
            raise BudgetExceeded(
                f"over this site's budget of {over.budget.limit} events per minute {over.budget.scope}; "
                "retry after Retry-After seconds",
                headers={"Retry-After": str(over.retry_after_seconds)},
            ) from None
        except RedisError as error:
            log.warning("redis unavailable while queueing for site %s: %s", site.name, type(error).__name__)
            raise QueueUnavailable(headers={"Retry-After": str(defaults.RETRY_AFTER_WHEN_UNAVAILABLE_SECONDS)}) from None
        if not already_seen:
            return len(events)
        events = [event for event in events if event["id"] not in already_seen]
    raise QueueUnavailable(headers={"Retry-After": "1"})


def _check_web_event_budget(site: Site, events: list[dict[str, Any]]) -> None:
    """Each Web Event is one Commerce API call with the site's key: a request may carry only so many."""
    web_events = sum(1 for event in events if routes_to_commerce(site, event["type"]))
    limit = site.limits.web_events_per_request
    if web_events > limit:
        metrics.EVENTS.labels(site.name, "over_budget").inc(len(events))
        raise BudgetExceeded(
            f"this request holds {web_events} Web Events; site {site.name!r} takes at most {limit} per request",
            details={"web_events": web_events, "web_events_per_request": limit},
            headers={"Retry-After": str(defaults.RETRY_AFTER_OVER_REQUEST_BUDGET_SECONDS)},
        )


def _without_refused_accounts(
    site: Site, events: list[dict[str, Any]], indices: list[int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Drop the events whose Commerce Account holds fields the site does not accept from a browser."""
    if site.commerce is None:
        return events, []
    kept, refused = [], []
    for event, index in zip(events, indices):
        account = (event.get("props") or {}).get("account")
        errors = refused_account_fields(account, site.commerce.account_fields) if account is not None else None
        if errors:
            refused.append({"index": index, "id": event["id"], "errors": {"props": {"account": errors}}})
        else:
            kept.append(event)
    return kept, refused


def _checked_events(site: Site, raw_events: list[Any], raw_body: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The batch's events to queue, and the refused ones with their reasons, by index."""
    events, rejected = check_events(raw_events, screen_text=may_hold_lone_surrogates(raw_body))
    refused_indices = {item["index"] for item in rejected}
    indices = [index for index in range(len(raw_events)) if index not in refused_indices]
    events, refused = _without_refused_accounts(site, events, indices)
    if refused:
        rejected = sorted(rejected + refused, key=lambda item: item["index"])
    return events, rejected


def _privacy_forbids(site: Site, envelope: dict[str, Any]) -> bool:
    """Global Privacy Control where the site honours it, or consent required and not given."""
    if site.honor_gpc and global_privacy_control(request):
        return True
    return site.require_consent and envelope.get("consent") is not True


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


def grant_cors(response: Response, origin: str) -> Response:
    """Let pages of ``origin`` read our answers, Retry-After included, and send the visitor cookie along.

    The collector usually sits on another origin than the page
    (``collect.my-store.example``), where a browser hides every response
    header not exposed here: without it the snippet could not honour
    ``Retry-After`` on a 429 or 503.
    """
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["Access-Control-Allow-Headers"] = "Content-Type"
    response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    response.headers["Access-Control-Max-Age"] = "86400"
    response.vary.add("Origin")
    return response


def allow_site_origin(response: Response) -> Response:
    """CORS for the pages of an origin that some site lists; an origin no site lists gets no grant, its preflight included."""
    origin = request.headers.get("Origin")
    if origin and origin in collector_state().allowed_origins:
        return grant_cors(response, origin)
    if origin:
        response.vary.add("Origin")
    return response


bp.after_request(allow_site_origin)


@bp.after_request
def _count_answer(response: Response) -> Response:
    if request.endpoint == "collect.collect":
        metrics.REQUESTS.labels(str(response.status_code)).inc()
        if 400 <= response.status_code < 500 or (response.status_code == 202 and g.get("rejected")):
            _keep_refusal(response)
    return response


def _keep_refusal(response: Response) -> None:
    """A refused request, or the events a 202 refused, for the console's bad rows (reasons only, no body)."""
    answer = response.get_json(silent=True) or {}
    if response.status_code == 202:
        message, details = f"{len(g.rejected)} of the batch's events refused", {"rejected": g.rejected}
    else:
        error = answer.get("error") or {}
        message, details = str(error.get("message", "")), error.get("details")
    record_refusal(collector_state().redis, response.status_code, message, g.get("site_name"), details)


@bp.route("/collect", methods=["OPTIONS"])
def collect_preflight() -> tuple[str, int]:
    return "", 204


@bp.post("/collect")
def collect() -> tuple[Response, int]:
    started = time.perf_counter()
    settings = collector_state().config.settings
    raw_body = read_body(request, current_app.config["MAX_CONTENT_LENGTH"])
    try:
        envelope = load_envelope(parse_json(raw_body), settings.max_events_per_batch)
    except ValidationError as error:
        raise BadRequest("the request is not a batch of events", details=error.messages) from None
    site = _site_named(envelope["site"])
    g.site_name = site.name
    _check_origin(site)
    events, rejected = _checked_events(site, envelope["events"], raw_body)
    g.rejected = rejected
    if not events:
        metrics.EVENTS.labels(site.name, "rejected").inc(len(rejected))
        raise EventsRejected(details={"rejected": rejected})

    unique = _without_repeats(events, set())
    if _privacy_forbids(site, envelope):
        accepted, dropped = 0, len(unique)
    else:
        _check_web_event_budget(site, unique)
        context = context_from_request(request, settings.cookie.name, unique[0].get("anonymous_id"))
        accepted, dropped = _enqueue(site, unique, context), 0
    duplicates = len(events) - accepted - dropped

    metrics.EVENTS.labels(site.name, "accepted").inc(accepted)
    metrics.EVENTS.labels(site.name, "duplicate").inc(duplicates)
    metrics.EVENTS.labels(site.name, "rejected").inc(len(rejected))
    metrics.EVENTS.labels(site.name, "dropped_for_privacy").inc(dropped)
    metrics.LATENCY.observe(time.perf_counter() - started)

    body = {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}
    if dropped:
        body["dropped_for_privacy"] = dropped
    response = jsonify(body)
    if accepted:
        _set_visitor_cookie(response, context)
    return response, 202


@bp.get("/sites/<site_name>/settings.json")
def site_settings(site_name: str) -> tuple[Response, int]:
    """What the snippet needs to know before it may send: the site's privacy policy."""
    site = _site_named(site_name)
    response = jsonify({"require_consent": site.require_consent, "honor_gpc": site.honor_gpc})
    response.headers["Cache-Control"] = "public, max-age=300"
    return response, 200
