"""Deliveries that failed for good, kept with the vendor's reason until replayed or purged.

They live in one Redis hash, ``collector:dead-letters``, keyed by site,
destination and delivery id, so recording the same failure twice keeps one
entry. Nothing here expires: a dead letter is data the site owner paid for.

A vendor's answer and the reason are kept with the site's API keys masked
(a vendor may echo the key it refused) and cut to ``MAX_KEPT_CHARS``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis

from collector.storage.outbox import KEY_PREFIX
from worker.delivery import MAX_KEPT_BODY_CHARS, Attempt

DEAD_LETTERS = KEY_PREFIX + "dead-letters"
MAX_KEPT_CHARS = MAX_KEPT_BODY_CHARS
MASK = "***"


def masked(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by ``***``, then cut to ``MAX_KEPT_CHARS``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return text[:MAX_KEPT_CHARS]


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
    def __init__(self, redis: Redis, secrets: Sequence[str] = ()):
        self._redis = redis
        self._secrets = tuple(secrets)

    def add(self, attempts: Sequence[Attempt], tries: int, reason_prefix: str = "") -> None:
        if not attempts:
            return
        now = time.time()
        records = {
            dead_letter_field(attempt.delivery): json.dumps(
                {
                    "delivery": attempt.delivery,
                    "status": attempt.status,
                    "answer": masked(attempt.answer, self._secrets),
                    "reason": masked(reason_prefix + attempt.reason, self._secrets),
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

    def count_by_site_and_destination(self) -> Counter[tuple[str, str]]:
        """How many wait, per ``(site, destination)``, read from the hash's field names alone."""
        fields = (key.decode() if isinstance(key, bytes) else key for key in self._redis.hkeys(DEAD_LETTERS))
        return Counter(tuple(field.split(":", 2)[:2]) for field in fields)  # type: ignore[misc]
