"""Events answered 2xx but never queued (a visitor's privacy choice, a bot), counted in Redis for the console.

``/metrics`` counts them per process (``collector_events_total``, outcome
``dropped_for_privacy`` or ``dropped_as_bot``); the console reads Redis, so
they are also added to ``collector:stats:dropped:<minute>`` (fields
``site|reason``), kept as long as the console's chart minutes. Only a
request that dropped something pays the round trip: an accepted batch
costs nothing more. A Redis failure here never fails the request: the
answer does not depend on the count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from redis import Redis, RedisError

from collector.storage.delivery_stats import MINUTES_KEPT
from collector.storage.outbox import KEY_PREFIX

log = logging.getLogger(__name__)

MINUTE_PREFIX = KEY_PREFIX + "stats:dropped:"
_SEPARATOR = "|"


def record_dropped(redis: Redis, site: str, dropped: Mapping[str, int], now: float | None = None) -> None:
    """Add a request's dropped events, by reason, to the current minute's counts."""
    key = f"{MINUTE_PREFIX}{int((time.time() if now is None else now) // 60)}"
    try:
        with redis.pipeline(transaction=False) as pipe:
            for reason, count in dropped.items():
                if count:
                    pipe.hincrby(key, f"{site}{_SEPARATOR}{reason}", count)
            pipe.expire(key, MINUTES_KEPT * 60)
            pipe.execute()
    except RedisError as error:
        log.info("could not count dropped events for the console: %s", type(error).__name__)


def dropped_counts(redis: Redis, minutes: int, now: float | None = None) -> dict[tuple[str, str], int]:
    """Events dropped over the last ``minutes`` clock minutes, by ``(site, reason)``."""
    current = int((time.time() if now is None else now) // 60)
    with redis.pipeline(transaction=False) as pipe:
        for minute in range(current - minutes + 1, current + 1):
            pipe.hgetall(f"{MINUTE_PREFIX}{minute}")
        rows = pipe.execute()
    totals: dict[tuple[str, str], int] = {}
    for row in rows:
        for field, count in row.items():
            site, _, reason = (field.decode() if isinstance(field, bytes) else field).rpartition(_SEPARATOR)
            totals[(site, reason)] = totals.get((site, reason), 0) + int(count)
    return totals
