"""The demo of ``collector dev``: a shop page at ``/`` and destinations that record.

With no ``--config``, ``collector dev`` configures one site, ``demo``, whose
Depict and Commerce destinations point back at this app
(``/_demo/depict/create-events``, ``/_demo/commerce/webevents``). The real
worker delivers to them over HTTP; they check each request against the
vendor's OpenAPI spec, answer as the vendor would, and keep the last
requests for the page to show. Nothing leaves the machine.
"""

from __future__ import annotations

import json
import time
from functools import cache
from importlib import resources
from typing import Any

from flask import Blueprint, Response, jsonify, request

from collector.config.schema import CollectorConfig, CommerceDestination, DepictDestination, Site
from collector.demo.vendor_spec import COMMERCE_SPEC, DEPICT_SPEC, VendorSpec
from collector.extensions import collector_state
from collector.mapping.commerce import web_event_id
from collector.observe.live_tail import recent_batches
from collector.storage.outbox import KEY_PREFIX

bp = Blueprint("demo", __name__)

DEMO_SITE = "demo"
DEMO_DEPICT_KEY = "demo-depict-key"
DEMO_COMMERCE_KEY = "demo-commerce-key"
RECORDED = KEY_PREFIX + "demo:deliveries"
KEPT = 200


def demo_config(port: int) -> CollectorConfig:
    """The demo site, its destinations pointing at this app on ``port``."""
    base = f"http://127.0.0.1:{port}"
    return CollectorConfig(
        sites={
            DEMO_SITE: Site(
                name=DEMO_SITE,
                origins=(base, f"http://localhost:{port}"),
                depict=DepictDestination(
                    url=f"{base}/_demo/depict/create-events", api_key=DEMO_DEPICT_KEY, tenant="demo", market="us"
                ),
                commerce=CommerceDestination(url=f"{base}/_demo/commerce/webevents", api_key=DEMO_COMMERCE_KEY),
            )
        },
        source="<demo>",
    )


@cache
def _spec(name: str) -> VendorSpec:
    return VendorSpec.load(DEPICT_SPEC if name == "depict" else COMMERCE_SPEC)


def _shown_headers() -> dict[str, str]:
    """The request's headers as the page shows them, with the API key masked."""
    shown = {}
    for name, value in request.headers.items():
        if name.lower() in ("x-api-key", "authorization"):
            value = value[:6] + "…"
        shown[name] = value
    return shown


def _timestamp(moment: float) -> str:
    """ISO 8601 in UTC with milliseconds: deliveries of one batch arrive within milliseconds of each other."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment * 1000) % 1000:03d}Z"


def _record(destination: str, body: Any, errors: list[str]) -> None:
    entry = {
        "destination": destination,
        "received_at": _timestamp(time.time()),
        "headers": _shown_headers(),
        "body": body,
        "spec_errors": errors,
    }
    redis = collector_state().redis
    with redis.pipeline() as pipe:
        pipe.lpush(RECORDED, json.dumps(entry))
        pipe.ltrim(RECORDED, 0, KEPT - 1)
        pipe.execute()


@bp.get("/")
def demo_page() -> Response:
    page = resources.files("collector.demo").joinpath("page.html").read_bytes()
    return Response(page, mimetype="text/html")


@bp.post("/_demo/depict/create-events")
def depict_create_events() -> tuple[Response, int]:
    if request.headers.get("X-API-KEY") != DEMO_DEPICT_KEY:
        return jsonify({"detail": "Invalid API key"}), 401
    body = request.get_json(silent=True)
    errors = _spec("depict").body_errors("/create-events", body)
    _record("depict", body, errors)
    if errors:
        return jsonify({"detail": [{"loc": ["body"], "msg": error, "type": "value_error"} for error in errors]}), 422
    return jsonify({}), 200


@bp.post("/_demo/commerce/webevents")
def commerce_webevents() -> tuple[Response, int]:
    if request.headers.get("Authorization") != f"Bearer {DEMO_COMMERCE_KEY}":
        return jsonify({"error": {"code": 401, "message": "Unauthorized"}, "success": False}), 401
    body = request.get_json(silent=True)
    errors = _spec("commerce").body_errors("/webevents", body)
    _record("commerce", body, errors)
    if errors:
        return jsonify({"error": {"code": 400, "message": "; ".join(errors)}, "success": False}), 400
    return jsonify({"data": body, "success": True}), 200


def _batches_by_event(redis: Any) -> dict[str, dict[str, Any]]:
    """Each recent event's batch (the /collect request that brought it), by the ids the vendors see:
    the event id (Depict's ``deduplication_id``) and the Web Event id derived from it."""
    found: dict[str, dict[str, Any]] = {}
    for batch in recent_batches(redis, DEMO_SITE):
        summary = {
            "key": f"{batch['at']:.6f}",
            "sent_at": _timestamp(batch["at"]),
            "events": [event["type"] for event in batch["events"]],
        }
        for event in batch["events"]:
            found.setdefault(event["id"], summary)
            found.setdefault(web_event_id(DEMO_SITE, event["id"]), summary)
    return found


def _batch_of(delivery: dict[str, Any], batches: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    body = delivery.get("body")
    ids = [event.get("deduplication_id") for event in body if isinstance(event, dict)] if isinstance(body, list) else []
    if isinstance(body, dict):
        ids = [body.get("id")]
    return next((batches[event_id] for event_id in ids if event_id in batches), None)


@bp.get("/_demo/deliveries")
def recorded_deliveries() -> Response:
    """What the destinations received, newest first, each with the page's batch it came from."""
    redis = collector_state().redis
    deliveries = [json.loads(entry) for entry in redis.lrange(RECORDED, 0, KEPT - 1)]
    batches = _batches_by_event(redis)
    for delivery in deliveries:
        delivery["batch"] = _batch_of(delivery, batches)
    return jsonify({"deliveries": deliveries})
