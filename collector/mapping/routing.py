"""Which of a site's destinations an event goes to.

Each destination lists the event names it takes (``events`` in the site's
config); ``"*"`` takes every event. By default Depict takes its seven types
and Commerce takes every event as a Web Event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from collector.config.defaults import ALL_EVENTS
from collector.config.schema import Site
from collector.inbound.enrich import RequestContext
from collector.mapping.commerce import to_web_event
from collector.mapping.depict import to_depict_event
from collector.storage.outbox import Delivery


def _takes(events: Iterable[str], event_type: str) -> bool:
    return ALL_EVENTS in events or event_type in events


def routes_to_depict(site: Site, event_type: str) -> bool:
    return site.depict is not None and _takes(site.depict.events, event_type)


def routes_to_commerce(site: Site, event_type: str) -> bool:
    return site.commerce is not None and _takes(site.commerce.events, event_type)


def destinations_of(site: Site) -> tuple[str, ...]:
    """The destinations a site has configured, in a fixed order."""
    return tuple(name for name in ("depict", "commerce") if getattr(site, name) is not None)


def depict_delivery_id(site: str, event_ids: Iterable[str]) -> str:
    digest = hashlib.sha256(f"{site}:{','.join(event_ids)}".encode()).hexdigest()
    return f"dep_{digest[:24]}"


def build_deliveries(site: Site, events: list[dict[str, Any]], context: RequestContext) -> list[Delivery]:
    """The requests owed to the vendors for one batch: one Depict array, one Commerce request per event."""
    deliveries: list[Delivery] = []
    depict_events = [event for event in events if routes_to_depict(site, event["type"])]
    if depict_events and site.depict is not None:
        event_ids = tuple(event["id"] for event in depict_events)
        deliveries.append(
            Delivery(
                id=depict_delivery_id(site.name, event_ids),
                site=site.name,
                destination="depict",
                body=[to_depict_event(event, site.depict, context) for event in depict_events],
                event_ids=event_ids,
                headers=context.depict_headers(),
            )
        )
    for event in events:
        if routes_to_commerce(site, event["type"]):
            web_event = to_web_event(site.name, event, context)
            deliveries.append(
                Delivery(id=web_event["id"], site=site.name, destination="commerce", body=web_event, event_ids=(event["id"],))
            )
    return deliveries
