"""Events answered 2xx but never queued (a visitor's privacy choice, a bot), counted in Redis for the console.

``/metrics`` counts them per process (``collector_events_total``, outcome
``dropped_for_privacy`` or ``dropped_as_bot``); the console reads Redis, so
they are also added to ``collector:stats:dropped:<minute>`` (fields
``site|reason``), kept as long as the console's chart minutes, and to
``collector:stats:dropped-hour:<hour>``, kept as long as its hourly counts
(the 24 h and 7 d ranges). Only a
request that dropped something pays the round trip: an accepted batch
costs nothing more. A Redis failure here never fails the request: the
answer does not depend on the count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from redis import Redis, RedisError

from collector.storage.delivery_stats import HOURS_KEPT, MINUTES_KEPT
from collector.storage.outbox import KEY_PREFIX

log = logging.getLogger(__name__)

MINUTE_PREFIX = KEY_PREFIX + "stats:dropped:"
HOUR_PREFIX = KEY_PREFIX + "stats:dropped-hour:"
_SEPARATOR = "|"


def record_dropped(redis: Redis, site: str, dropped: Mapping[str, int], now: float | None = None) -> None:
    """Add a request's dropped events, by reason, to the current minute's counts."""
    at = time.time() if now is None else now
    buckets = ((f"{MINUTE_PREFIX}{int(at // 60)}", MINUTES_KEPT * 60), (f"{HOUR_PREFIX}{int(at // 3600)}", HOURS_KEPT * 3600))
    try:
        with redis.pipeline(transaction=False) as pipe:
            for key, seconds in buckets:
                for reason, count in dropped.items():
                    if count:
                        pipe.hincrby(key, f"{site}{_SEPARATOR}{reason}", count)
                pipe.expire(key, seconds)
            pipe.execute()
    except RedisError as error:
        log.info("could not count dropped events for the console: %s", type(error).__name__)


def dropped_counts(redis: Redis, minutes: int, now: float | None = None) -> dict[tuple[str, str], int]:
    """Events dropped over the last ``minutes`` clock minutes (past :data:`MINUTES_KEPT`: whole clock hours), by ``(site, reason)``."""
    if minutes > MINUTES_KEPT:
        return _counts(redis, HOUR_PREFIX, 3600, min(HOURS_KEPT, -(-minutes // 60)), now)
    return _counts(redis, MINUTE_PREFIX, 60, minutes, now)


def _counts(redis: Redis, prefix: str, seconds: int, buckets: int, now: float | None) -> dict[tuple[str, str], int]:
    current = int((time.time() if now is None else now) // seconds)
    with redis.pipeline(transaction=False) as pipe:
        for bucket in range(current - buckets + 1, current + 1):
            pipe.hgetall(f"{prefix}{bucket}")
        rows = pipe.execute()
    totals: dict[tuple[str, str], int] = {}
    for row in rows:
        for field, count in row.items():
            site, _, reason = (field.decode() if isinstance(field, bytes) else field).rpartition(_SEPARATOR)
            totals[(site, reason)] = totals.get((site, reason), 0) + int(count)
    return totals
