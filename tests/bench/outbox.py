"""The collector's outboxes as the bench reads them: which deliveries wait, per destination.

Entries are read with ``collector.storage.outbox``'s own decoder, so the bench
follows the outbox format (today one zlib-compressed JSON list of deliveries
per ``/collect`` request and destination) instead of assuming one.
"""

from __future__ import annotations

from typing import Any

from redis import Redis

from collector.storage.outbox import decode_entry, outbox_key
from tests.bench.site import SITE


def read(redis: Redis, destination: str, key: str | None = None) -> list[dict[str, Any]]:
    """Every delivery waiting in the site's outbox for ``destination`` (or in the list ``key``)."""
    return [delivery for raw in redis.lrange(key or outbox_key(SITE, destination), 0, -1) for delivery in decode_entry(raw)]


def events_in(deliveries: list[dict[str, Any]]) -> int:
    return sum(len(delivery["event_ids"]) for delivery in deliveries)
