"""What the console is asked to show: filters, a search and a time range, as query parameters.

``/console/?site=my_store&type=purchase&destination=commerce&status=dead&source=snippet&q=SKU-1&range=24h``
is a URL a site owner can share; the JSON API (``/console/api/...``) takes
the same parameters. They are applied on the server, to each panel that
can judge them:

- the live tail: every filter and the search (event id, event name, or
  product id), and the range (its batches' time);
- the dead letters: site, destination, status (a vendor's HTTP status, or
  ``dead``), event type and the search (delivery id, event id, or anything
  in the request body, a product id included), and the range (when they
  failed);
- the refused requests: site, an HTTP status, the search (in the reason)
  and the range;
- the chart, the overview and the dropped events: site, destination and
  the range.

``status`` is one word for two things a site owner looks for: a delivery
status (:data:`~collector.storage.delivery_trace.STATUSES`) or a vendor's HTTP
status (``422``). Empty parameters mean "any".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from collector.config.defaults import DESTINATIONS, SOURCES
from collector.errors import BadRequest
from collector.storage.delivery_trace import DEAD, STATUSES

RANGES: dict[str, int] = {"1h": 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600}
RANGE_LABELS = {"1h": "1 h", "24h": "24 h", "7d": "7 d"}
MAX_SEARCH_CHARS = 200
PARAMETERS: tuple[str, ...] = ("site", "type", "destination", "status", "source", "q", "range")


@dataclass(frozen=True)
class Find:
    """The chosen filters; None is "any"."""

    site: str | None = None
    type: str | None = None
    destination: str | None = None
    status: str | None = None
    source: str | None = None
    q: str | None = None
    range: str | None = None

    @property
    def http_status(self) -> int | None:
        return int(self.status) if self.status and self.status.isdigit() else None

    @property
    def delivery_status(self) -> str | None:
        return self.status if self.status in STATUSES else None

    @property
    def seconds(self) -> int | None:
        return RANGES.get(self.range or "")

    def since(self, now: float) -> float | None:
        return now - self.seconds if self.seconds else None

    def query(self, **changes: str | None) -> dict[str, str]:
        """The query string's parameters (the empty ones left out), with ``changes``."""
        chosen = {**asdict(self), **changes}
        return {key: value for key, value in chosen.items() if value}

    @property
    def narrows(self) -> bool:
        """Whether anything but the range is chosen."""
        return any(value for key, value in asdict(self).items() if key != "range")

    def matches_event(self, site: str, event: Mapping[str, Any], source: str | None, statuses: Mapping[str, str]) -> bool:
        """A live tail's event: ``statuses`` by destination; the HTTP status, if chosen, of its newest answer (``event["answers"]``)."""
        if self.site and site != self.site:
            return False
        if self.type and str(event.get("type", "")).lower() != self.type.lower():
            return False
        if self.source and source != self.source:
            return False
        if self.destination and self.destination not in statuses:
            return False
        shown = [statuses[self.destination]] if self.destination else list(statuses.values())
        if self.delivery_status and self.delivery_status not in shown:
            return False
        if self.http_status is not None and self.http_status not in event.get("answers", {}).values():
            return False
        return not self.q or _event_found(self.q, event)

    def matches_letter(self, row: Mapping[str, Any], body: Any, event_ids: list[str]) -> bool:
        """A dead letter's row (``site``, ``destination``, ``id``, ``status``), with its delivery's body and event ids."""
        if self.site and row["site"] != self.site or self.destination and row["destination"] != self.destination:
            return False
        if self.http_status is not None and row["status"] != self.http_status:
            return False
        if self.delivery_status and self.delivery_status != DEAD:
            return False
        if self.type and self.type.lower() not in _body_types(body):
            return False
        if not self.q:
            return True
        needle = self.q.lower()
        return needle in row["id"].lower() or any(needle in event_id.lower() for event_id in event_ids) or needle in _text(body)

    def matches_refusal(self, refusal: Mapping[str, Any]) -> bool:
        if self.site and refusal.get("site") != self.site:
            return False
        if self.http_status is not None and refusal.get("status") != self.http_status:
            return False
        if self.delivery_status:
            return False  # a refusal was never queued
        return not self.q or self.q.lower() in _text([refusal.get("message"), refusal.get("details")])


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str).lower()


def _event_found(q: str, event: Mapping[str, Any]) -> bool:
    """The search: an event id or name (substring, any case), or a product id the event names."""
    needle = q.lower()
    props = event.get("props") or {}
    products = [props.get("product_id"), *(props.get("variant_ids") or [])] if isinstance(props, dict) else []
    return (
        needle in str(event.get("id", "")).lower()
        or needle in str(event.get("type", "")).lower()
        or any(isinstance(product, str) and needle in product.lower() for product in products)
    )


def _body_types(body: Any) -> set[str]:
    """The event types a delivery's body names: a Depict event's ``type``, a Web Event's ``name``."""
    items = body if isinstance(body, list) else [body]
    return {str(item.get(key)).lower() for item in items if isinstance(item, dict) for key in ("type", "name") if item.get(key)}


def parse_find(values: Mapping[str, str]) -> Find:
    """The filters of a query string or a form; a value no panel could match is a 400 that says what is allowed."""
    chosen = {name: (values.get(name) or "").strip() or None for name in PARAMETERS}
    if chosen["destination"] and chosen["destination"] not in DESTINATIONS:
        raise BadRequest(f"destination must be one of {', '.join(DESTINATIONS)}")
    if chosen["source"] and chosen["source"] not in SOURCES:
        raise BadRequest(f"source must be one of {', '.join(SOURCES)}")
    status = chosen["status"]
    if status and status not in STATUSES and not (status.isdigit() and 100 <= int(status) <= 599):
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}, or an HTTP status such as 422")
    if chosen["range"] and chosen["range"] not in RANGES:
        raise BadRequest(f"range must be one of {', '.join(RANGES)}")
    if chosen["q"] and len(chosen["q"]) > MAX_SEARCH_CHARS:
        raise BadRequest(f"the search is at most {MAX_SEARCH_CHARS} characters")
    return Find(**chosen)
