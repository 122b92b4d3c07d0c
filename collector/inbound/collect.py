"""``POST /collect``: what the snippet sends, checked, enriched, mapped and queued.

The answer comes only after the deliveries are in Redis: ``202`` with the
counts, ``422`` when no event was valid, ``400`` when the request itself is
unusable (``request_body.py``), ``403`` for a page of another origin,
``413`` for a body over the limit, ``429`` over a budget of the site's,
``503`` with ``Retry-After`` when Redis cannot take them.

A visitor's privacy choice is enforced here, not only in the snippet: with
Global Privacy Control on (where the site honours it), or on a site that
requires consent when the snippet does not say it was given, nothing is
queued and no cookie is set; the events are counted as dropped. The same
holds for a known bot's request (``collector/inbound/bots.py``) on a site that
drops bots, judged after the events were checked, so that a refusal reads
the same whoever sent it. Both are answered ``202`` with ``accepted: 0``
and the count under ``dropped_for_privacy`` or ``dropped_as_bot``: a bot
told that nothing went wrong does not retry, and ``accepted`` still
counts only events that will be delivered.

The three browser-facing paths are the configuration's
(``collector/inbound/paths.py``): the routes are added where it says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import orjson

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from marshmallow import ValidationError

from collector.config import defaults
from collector.config.schema import CookiePolicy, Site
from collector.errors import BadRequest, EventsRejected, OriginNotAllowed, UnknownSite
from collector.extensions import collector_state
from collector.inbound.enrich import RequestContext, context_from_request, forwardable_user_agent, global_privacy_control
from collector.inbound.intake import VisitorEvents, bot_sent, check_batch, check_web_event_budget, count_outcome, queue_batch, web_events_in, without_repeats
from collector.inbound.paths import configured_paths
from collector.inbound.request_body import may_hold_lone_surrogates, parse_json, read_body
from collector.inbound.schema import load_envelope
from collector.observe import metrics
from collector.observe.live_tail import record_refusal

log = logging.getLogger(__name__)
bp = Blueprint("collect", __name__)


def _site_named(name: str) -> Site:
    site = collector_state().config.sites.get(name)
    if site is None:
        raise UnknownSite(f"unknown site {name!r}")
    return site


def check_origin(site: Site) -> None:
    """403 for a page of an origin the site does not list (a site that lists none takes any)."""
    origin = request.headers.get("Origin")
    if origin and site.origins and origin not in site.origins:
        raise OriginNotAllowed(f"origin {origin!r} is not configured for site {site.name!r}")


def _privacy_forbids(site: Site, envelope: dict[str, Any]) -> bool:
    """Global Privacy Control where the site honours it, or consent required and not given."""
    if site.honor_gpc and global_privacy_control(request):
        return True
    return site.require_consent and envelope.get("consent") is not True


def _drop_reason(site: Site, envelope: dict[str, Any]) -> str | None:
    """Why the whole batch is answered but not queued (``privacy``, ``bot``), or None when it is queued."""
    if _privacy_forbids(site, envelope):
        return "privacy"
    if bot_sent(site, forwardable_user_agent(request.headers.get("User-Agent"))):
        return "bot"
    return None


@lru_cache(maxsize=8)
def _cookie_attributes(cookie: CookiePolicy, secure: bool) -> str:
    """What follows the value in ``Set-Cookie``, made once per policy (``Max-Age``, which every browser honours, not ``Expires``)."""
    attributes = f"; Max-Age={cookie.max_age_days * 86400}; Path=/"
    if cookie.domain:
        attributes += f"; Domain={cookie.domain}"
    return attributes + ("; Secure" if secure else "") + "; HttpOnly; SameSite=Lax"


def _set_visitor_cookie(response: Response, context: RequestContext) -> None:
    """The visitor id (URL-safe characters only, so it needs no quoting) in a first-party, HttpOnly cookie."""
    cookie = collector_state().config.settings.cookie
    response.headers.add("Set-Cookie", f"{cookie.name}={context.visitor_id}{_cookie_attributes(cookie, request.is_secure)}")


@lru_cache(maxsize=256)
def _cors_headers(origin: str, allow_headers: str, allow_methods: str) -> tuple[tuple[str, str], ...]:
    return (
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Allow-Headers", allow_headers),
        ("Access-Control-Allow-Methods", allow_methods),
        ("Access-Control-Expose-Headers", "Retry-After"),
        ("Access-Control-Max-Age", "86400"),
    )


def grant_cors(
    response: Response, origin: str, allow_headers: str = "Content-Type", allow_methods: str = "POST, OPTIONS"
) -> Response:
    """Let pages of ``origin`` read our answers, Retry-After included, and send the visitor cookie along.

    The collector usually sits on another origin than the page
    (``collect.my-store.example``), where a browser hides every response
    header not exposed here: without it the snippet could not honour
    ``Retry-After`` on a 429 or 503.
    """
    response.headers.extend(_cors_headers(origin, allow_headers, allow_methods))
    if "Vary" in response.headers:
        response.vary.add("Origin")
    else:
        response.headers["Vary"] = "Origin"
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
        keep_refusal(response, accepted_status=202, unit="events")
    return response


def keep_refusal(response: Response, accepted_status: int, unit: str) -> None:
    """A refused request, or the ``unit`` an accepted answer refused, for the console's bad rows (reasons only, no body)."""
    if response.status_code == accepted_status and g.get("rejected"):
        message, details = f"{len(g.rejected)} of the batch's {unit} refused", {"rejected": g.rejected}
    elif 400 <= response.status_code < 500:
        error = (response.get_json(silent=True) or {}).get("error") or {}
        message, details = str(error.get("message", "")), error.get("details")
    else:
        return
    record_refusal(collector_state().redis, response.status_code, message, g.get("site_name"), details)


def collect_preflight() -> tuple[str, int]:
    return "", 204


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
    check_origin(site)
    events, rejected = check_batch(site, envelope["events"], may_hold_lone_surrogates(raw_body))
    g.rejected = rejected
    if not events:
        count_outcome(site, 0, 0, len(rejected))
        raise EventsRejected(details={"rejected": rejected})

    unique = without_repeats(events)
    reason = _drop_reason(site, envelope)
    if reason:
        accepted, dropped = 0, {reason: len(unique)}
    else:
        check_web_event_budget(site, web_events_in(site, unique), len(unique))
        context = context_from_request(request, settings.cookie.name, unique[0].get("anonymous_id"))
        accepted, dropped = queue_batch(site, [VisitorEvents(context, unique)], browser=True), {}
    duplicates = len(events) - accepted - sum(dropped.values())
    count_outcome(site, accepted, duplicates, len(rejected), dropped)
    metrics.LATENCY.observe(time.perf_counter() - started)

    body: dict[str, Any] = {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}
    body.update(dropped_fields(dropped))
    response = Response(orjson.dumps(body), mimetype="application/json")
    if accepted:
        _set_visitor_cookie(response, context)
    return response, 202


def site_settings(site_name: str) -> tuple[Response, int]:
    """What the snippet needs to know before it may send: the site's privacy policy."""
    site = _site_named(site_name)
    response = jsonify({"require_consent": site.require_consent, "honor_gpc": site.honor_gpc})
    response.headers["Cache-Control"] = "public, max-age=300"
    return response, 200


def dropped_fields(dropped: Mapping[str, int]) -> dict[str, int]:
    """What an answer says of the events it dropped: ``dropped_for_privacy``, ``dropped_as_bot``."""
    return {defaults.DROP_OUTCOMES[reason]: count for reason, count in dropped.items() if count}


def _add_routes(state: BlueprintSetupState) -> None:
    """The routes at the paths the configuration names (``[collector.paths]``), and at no other."""
    paths = configured_paths(state.app)
    state.add_url_rule(paths.collect, "collect_preflight", collect_preflight, methods=["OPTIONS"])
    state.add_url_rule(paths.collect, "collect", collect, methods=["POST"])
    state.add_url_rule(paths.site_settings_rule, "site_settings", site_settings, methods=["GET"])


bp.record(_add_routes)
