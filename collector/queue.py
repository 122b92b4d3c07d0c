"""Deliveries -> the site's outboxes in Redis, deduplicated, in one round trip.

A *delivery* is one HTTP request we owe a vendor: a Depict array of the
batch's events, or one Commerce Web Event. ``/collect`` hands them to
:func:`enqueue_deliveries`, which runs one Lua script that

1. checks that none of the batch's event ids was seen for this site within
   the dedupe window (if some were, it writes nothing and names them, and
   the caller retries without them), then
2. marks every event id as seen, appends each delivery to its outbox list
   (one per site and destination), and wakes a dispatcher.

A script runs atomically, so an acknowledged event is both marked and
queued, or neither. The worker's dispatcher moves outbox entries into RQ
jobs (see ``worker/dispatch.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

KEY_PREFIX = "collector:"
OUTBOX_REGISTRY = KEY_PREFIX + "outboxes"
WAKE_LIST = KEY_PREFIX + "wake"


def outbox_key(site: str, destination: str) -> str:
    return f"{KEY_PREFIX}outbox:{site}:{destination}"


def seen_key(site: str, event_id: str) -> str:
    return f"{KEY_PREFIX}seen:{site}:{event_id}"


@dataclass(frozen=True)
class Delivery:
    """One request owed to a vendor. ``id`` is stable across retries and replays."""

    id: str
    site: str
    destination: str
    body: Any
    event_ids: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self, queued_at: float) -> str:
        return json.dumps(
            {
                "id": self.id,
                "site": self.site,
                "destination": self.destination,
                "headers": self.headers,
                "body": self.body,
                "event_ids": list(self.event_ids),
                "queued_at": queued_at,
            },
            separators=(",", ":"),
        )


_ENQUEUE_SCRIPT = """
local seen_count = tonumber(ARGV[2])
local outbox_count = tonumber(ARGV[3])
local duplicates = {}
for i = 1, seen_count do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    duplicates[#duplicates + 1] = i - 1
  end
end
if #duplicates > 0 then
  return duplicates
end
for i = 1, seen_count do
  redis.call('SET', KEYS[i], '1', 'EX', ARGV[1])
end
for i = 4, #ARGV, 2 do
  redis.call('RPUSH', KEYS[seen_count + tonumber(ARGV[i])], ARGV[i + 1])
end
local registry = KEYS[seen_count + outbox_count + 1]
local wake = KEYS[seen_count + outbox_count + 2]
for i = 1, outbox_count do
  redis.call('SADD', registry, KEYS[seen_count + i])
end
redis.call('LPUSH', wake, '1')
redis.call('LTRIM', wake, 0, 0)
return duplicates
"""


class Outbox:
    """The write side of the outboxes, bound to one Redis connection."""

    def __init__(self, redis: Redis, dedupe_window_seconds: int):
        self._redis = redis
        self._window = dedupe_window_seconds
        self._script = redis.register_script(_ENQUEUE_SCRIPT)

    def try_enqueue(self, site: str, event_ids: Sequence[str], deliveries: Sequence[Delivery]) -> list[str]:
        """Queue all or nothing. Returns the event ids already seen (then nothing was written)."""
        outboxes: list[str] = []
        args: list[Any] = [self._window, len(event_ids), 0]
        queued_at = time.time()
        for delivery in deliveries:
            key = outbox_key(delivery.site, delivery.destination)
            if key not in outboxes:
                outboxes.append(key)
            args += [outboxes.index(key) + 1, delivery.to_json(queued_at)]
        args[2] = len(outboxes)
        keys = [seen_key(site, event_id) for event_id in event_ids] + outboxes + [OUTBOX_REGISTRY, WAKE_LIST]
        duplicates = self._script(keys=keys, args=args)
        return [event_ids[int(index)] for index in duplicates]


def pending_deliveries(redis: Redis) -> dict[str, int]:
    """How many deliveries wait in each outbox (for /metrics and the demo)."""
    keys = sorted(key.decode() if isinstance(key, bytes) else key for key in redis.smembers(OUTBOX_REGISTRY))
    if not keys:
        return {}
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    return dict(zip(keys, pipe.execute()))
