"""The console's live tail: the last batches accepted per site, and the last requests refused.

An accepted batch is summarised (its events' type, id, page and props, with
personal fields masked) and pushed by the enqueue script itself, so the tail
costs no extra round trip (``collector/storage/outbox.py``); it is written only
when something reads it (the console is on, or ``collector dev``'s demo). A refused request (a
4xx, or the events a 202 rejected) is kept with its status and reasons,
what Snowplow calls bad rows. Both lists keep only the last
:data:`KEPT` entries. Neither holds a request body: only what the console
shows.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from redis import Redis, RedisError

from collector.mapping.commerce_models import PERSONAL_FIELDS
from collector.storage.outbox import KEY_PREFIX, TailEntry

log = logging.getLogger(__name__)

RECENT_PREFIX = KEY_PREFIX + "tail:"
REFUSALS = KEY_PREFIX + "refusals"
KEPT = 50
MASK = "***"
MAX_REFUSAL_CHARS = 2000
_PERSONAL = frozenset(PERSONAL_FIELDS) | {"addresses"}


def recent_key(site: str) -> str:
    return RECENT_PREFIX + site


def masked(value: Any) -> Any:
    """``value`` with every personal field of a Commerce Account (and what it nests) replaced by ``***``."""
    if isinstance(value, dict):
        return {key: MASK if key in _PERSONAL else masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item) for item in value]
    return value


def _masked_id(value: str | None) -> str | None:
    """A user id may be an e-mail address: show its first two characters only."""
    return None if not value else value[:2] + MASK


def tail_entry(site: str, events: list[dict[str, Any]]) -> TailEntry:
    """What the live tail keeps of an accepted batch."""
    summary = {
        "at": time.time(),
        "events": [
            {
                "id": event["id"],
                "type": event["type"],
                "url": event.get("url"),
                "user_id": _masked_id(event.get("user_id")),
                "props": masked(event.get("props") or {}),
            }
            for event in events
        ],
    }
    return TailEntry(recent_key(site), json.dumps(summary, separators=(",", ":")), KEPT)


def record_refusal(redis: Redis, status: int, message: str, site: str | None, details: Any = None) -> None:
    """Keep a refusal for the console; never fails the request that is being refused."""
    record = json.dumps({"at": time.time(), "status": status, "site": site, "message": message, "details": details})
    if len(record) > MAX_REFUSAL_CHARS:
        record = json.dumps({"at": time.time(), "status": status, "site": site, "message": message, "details": "(too long to keep)"})
    try:
        with redis.pipeline(transaction=False) as pipe:
            pipe.lpush(REFUSALS, record)
            pipe.ltrim(REFUSALS, 0, KEPT - 1)
            pipe.execute()
    except RedisError as error:
        log.info("could not keep a refusal for the console: %s", type(error).__name__)


def recent_batches(redis: Redis, site: str) -> list[dict[str, Any]]:
    """The site's last accepted batches, newest first."""
    return [json.loads(raw) for raw in redis.lrange(recent_key(site), 0, KEPT - 1)]


def recent_refusals(redis: Redis) -> list[dict[str, Any]]:
    """The last refusals, newest first."""
    return [json.loads(raw) for raw in redis.lrange(REFUSALS, 0, KEPT - 1)]
