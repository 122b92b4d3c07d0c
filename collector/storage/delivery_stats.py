"""What the workers did, counted in Redis, so one scrape of the collector shows the whole pipeline.

Every delivery job adds its figures once, at its end, in one pipeline
(:func:`record_job`); ``/metrics`` and the console read them back. Kept in
Redis, the counts are right however many collector and worker processes
there are, and the workers need no port of their own.

- ``collector:stats:deliveries``: events by ``site|destination|outcome``
  (delivered, retried, dead_lettered, returned to the outbox), counted in
  events like every other figure (a Depict request of 10 events counts 10);
- ``collector:stats:answers``: vendor answers by ``site|destination|class``
  (``2xx``, ``4xx``, ``5xx``, or ``error`` when no answer came);
- ``collector:stats:latency``: vendor answer times per destination, as
  histogram buckets (``destination|le``), a sum and a count;
- ``collector:stats:minute:<minute>``: events delivered and failed per
  ``site|destination`` in one clock minute, kept :data:`MINUTES_KEPT`
  minutes, for the console's chart.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from redis import Redis

from collector.storage.outbox import KEY_PREFIX

DELIVERIES = KEY_PREFIX + "stats:deliveries"
ANSWERS = KEY_PREFIX + "stats:answers"
LATENCY = KEY_PREFIX + "stats:latency"
MINUTE_PREFIX = KEY_PREFIX + "stats:minute:"
MINUTES_KEPT = 6 * 60
OUTCOMES: tuple[str, ...] = ("delivered", "retried", "dead_lettered", "returned")
LATENCY_BUCKETS: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SEPARATOR = "|"


def answer_class(status: int | None) -> str:
    """``2xx``, ``4xx``, ``5xx`` for an HTTP status; ``error`` when the vendor gave none (network, timeout)."""
    return f"{status // 100}xx" if status is not None else "error"


def _bucket(seconds: float) -> str:
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return repr(bound)
    return "+Inf"


@dataclass
class JobFigures:
    """One job's figures, added to Redis by :func:`record_job`."""

    site: str
    destination: str
    outcomes: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    events_delivered: int = 0
    events_failed: int = 0


def record_job(redis: Redis, figures: JobFigures, now: float | None = None) -> None:
    """Add a job's figures to the running counts, in one round trip."""
    prefix = f"{figures.site}{_SEPARATOR}{figures.destination}{_SEPARATOR}"
    minute_key = f"{MINUTE_PREFIX}{int((time.time() if now is None else now) // 60)}"
    with redis.pipeline(transaction=False) as pipe:
        for outcome, count in figures.outcomes.items():
            if count:
                pipe.hincrby(DELIVERIES, prefix + outcome, count)
        for answer, count in figures.answers.items():
            pipe.hincrby(ANSWERS, prefix + answer, count)
        buckets = Counter(_bucket(seconds) for seconds in figures.latencies)
        for bucket, count in buckets.items():
            pipe.hincrby(LATENCY, f"{figures.destination}{_SEPARATOR}{bucket}", count)
        if figures.latencies:
            pipe.hincrbyfloat(LATENCY, f"{figures.destination}{_SEPARATOR}sum", sum(figures.latencies))
            pipe.hincrby(LATENCY, f"{figures.destination}{_SEPARATOR}count", len(figures.latencies))
        if figures.events_delivered or figures.events_failed:
            pipe.hincrby(minute_key, prefix + "delivered", figures.events_delivered)
            pipe.hincrby(minute_key, prefix + "failed", figures.events_failed)
            pipe.expire(minute_key, MINUTES_KEPT * 60)
        pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _split_counts(raw: dict) -> dict[tuple[str, ...], int]:
    return {tuple(_text(key).split(_SEPARATOR)): int(value) for key, value in raw.items()}


def delivery_counts(redis: Redis) -> dict[tuple[str, ...], int]:
    """Deliveries by ``(site, destination, outcome)``."""
    return _split_counts(redis.hgetall(DELIVERIES))


def answer_counts(redis: Redis) -> dict[tuple[str, ...], int]:
    """Vendor answers by ``(site, destination, class)``."""
    return _split_counts(redis.hgetall(ANSWERS))


@dataclass(frozen=True)
class LatencyHistogram:
    """Cumulative counts per upper bound (``+Inf`` last), their sum and count, as Prometheus wants them."""

    buckets: list[tuple[str, int]]
    sum: float
    count: int


def latency_histograms(redis: Redis) -> dict[str, LatencyHistogram]:
    """Vendor answer times per destination."""
    raw: dict[str, dict[str, float]] = {}
    for key, value in redis.hgetall(LATENCY).items():
        destination, part = _text(key).split(_SEPARATOR)
        raw.setdefault(destination, {})[part] = float(value)
    histograms = {}
    for destination, parts in raw.items():
        cumulative, buckets = 0, []
        for bound in [*map(repr, LATENCY_BUCKETS), "+Inf"]:
            cumulative += int(parts.get(bound, 0))
            buckets.append((bound, cumulative))
        histograms[destination] = LatencyHistogram(buckets, parts.get("sum", 0.0), int(parts.get("count", 0)))
    return histograms


def events_per_minute(redis: Redis, minutes: int, now: float | None = None) -> list[tuple[int, dict[tuple[str, ...], int]]]:
    """The last ``minutes`` clock minutes, oldest first: ``(minute, {(site, destination, delivered|failed): events})``."""
    current = int((time.time() if now is None else now) // 60)
    wanted = list(range(current - minutes + 1, current + 1))
    with redis.pipeline(transaction=False) as pipe:
        for minute in wanted:
            pipe.hgetall(f"{MINUTE_PREFIX}{minute}")
        rows = pipe.execute()
    return [(minute, _split_counts(row)) for minute, row in zip(wanted, rows)]


def minutes_for(hours: float) -> int:
    return max(1, min(MINUTES_KEPT, math.ceil(hours * 60)))


def sites_and_destinations(counts: Iterable[tuple[str, ...]]) -> list[tuple[str, str]]:
    """The ``(site, destination)`` pairs named in a set of count keys, sorted."""
    return sorted({(key[0], key[1]) for key in counts})
