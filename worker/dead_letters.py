"""Deliveries that failed for good, kept with the vendor's reason until replayed or purged.

They live in one Redis hash, ``collector:dead-letters``, keyed by site,
destination and delivery id, so recording the same failure twice keeps one
entry. Nothing here expires: a dead letter is data the site owner paid for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis

from collector.queue import KEY_PREFIX
from worker.delivery import Attempt

DEAD_LETTERS = KEY_PREFIX + "dead-letters"


def dead_letter_field(delivery: dict[str, Any]) -> str:
    return f"{delivery['site']}:{delivery['destination']}:{delivery['id']}"


@dataclass(frozen=True)
class DeadLetter:
    delivery: dict[str, Any]
    status: int | None
    answer: str
    reason: str
    attempts: int
    failed_at: float


class DeadLetters:
    def __init__(self, redis: Redis):
        self._redis = redis

    def add(self, attempts: Sequence[Attempt], tries: int, reason_prefix: str = "") -> None:
        if not attempts:
            return
        now = time.time()
        records = {
            dead_letter_field(attempt.delivery): json.dumps(
                {
                    "delivery": attempt.delivery,
                    "status": attempt.status,
                    "answer": attempt.answer,
                    "reason": reason_prefix + attempt.reason,
                    "attempts": tries,
                    "failed_at": now,
                }
            )
            for attempt in attempts
        }
        self._redis.hset(DEAD_LETTERS, mapping=records)

    def __iter__(self) -> Iterator[DeadLetter]:
        for _, raw in self._redis.hscan_iter(DEAD_LETTERS):
            yield DeadLetter(**json.loads(raw))

    def __len__(self) -> int:
        return int(self._redis.hlen(DEAD_LETTERS))
