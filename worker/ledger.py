"""Which deliveries already reached their vendor, so a retried or replayed job skips them.

A job carries many deliveries and RQ retries a job as a whole; without this
record, one failed Commerce event would resend the nineteen that succeeded.
Each delivered id is kept for the dedupe window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis

from collector.queue import KEY_PREFIX


def delivered_key(delivery: dict[str, Any]) -> str:
    return f"{KEY_PREFIX}delivered:{delivery['site']}:{delivery['destination']}:{delivery['id']}"


class DeliveryLedger:
    def __init__(self, redis: Redis, window_seconds: int):
        self._redis = redis
        self._window = window_seconds

    def undelivered(self, deliveries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        if not deliveries:
            return []
        marks = self._redis.mget([delivered_key(delivery) for delivery in deliveries])
        return [delivery for delivery, mark in zip(deliveries, marks) if mark is None]

    def mark_delivered(self, deliveries: Sequence[dict[str, Any]]) -> None:
        if not deliveries:
            return
        pipe = self._redis.pipeline(transaction=False)
        for delivery in deliveries:
            pipe.set(delivered_key(delivery), "1", ex=self._window)
        pipe.execute()
