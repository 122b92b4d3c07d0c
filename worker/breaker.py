"""A circuit breaker per site and destination, kept in Redis so every worker sees it.

When a job's deliveries all fail with answers worth retrying (the vendor is
down, or answers 429), the breaker opens for the retry delay (at least the
vendor's Retry-After). While it is open the dispatcher leaves that outbox
alone and jobs already queued put their deliveries back in the outbox
instead of sending: the backlog waits in one place and burns no retries,
and other destinations, in their own queues and processes, are not held up.
"""

from __future__ import annotations

from redis import Redis

from collector.storage.outbox import KEY_PREFIX


def breaker_key(site: str, destination: str) -> str:
    return f"{KEY_PREFIX}breaker:{site}:{destination}"


class Breaker:
    def __init__(self, redis: Redis, site: str, destination: str):
        self._redis = redis
        self._key = breaker_key(site, destination)

    def open_for(self, seconds: float) -> None:
        self._redis.set(self._key, "open", px=max(int(seconds * 1000), 1))

    def is_open(self) -> bool:
        return bool(self._redis.exists(self._key))

    def seconds_left(self) -> float:
        milliseconds = self._redis.pttl(self._key)
        return max(milliseconds, 0) / 1000
