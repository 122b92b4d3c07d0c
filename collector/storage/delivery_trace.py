"""Traced deliveries: every attempt at a traced event's deliveries, kept so the console can show one event whole.

The dead letters say why a delivery failed for good, and the per-minute
counts how many did; neither answers "why didn't this purchase reach
Commerce?" for one event, nor whether it is still retrying. So, while the
console is on, ``/collect`` and ``/v1`` mark a batch's deliveries as
*traced* (:data:`TRACE_FIELD` in the outbox entry) as long as the
process's :class:`TraceBudget` of traced events per second allows, and the
live tail says which batches are. The worker adds, for each attempt at a
traced delivery, one record (``worker/trace.py``: the request with its
keys and personal fields masked, the vendor's status, answer excerpt and
latency) to the site's list, in the pipeline that already adds the job's
counts (``delivery_stats.record_job``): no round trip of its own.

Redis holds a fixed amount whatever the traffic: per site, the last
:data:`ATTEMPTS_KEPT` records (each at most about
:data:`MAX_REQUEST_BODY_CHARS` + :data:`MAX_ANSWER_CHARS` + 1 KB), the list
expiring :data:`TRACE_SECONDS` after its last write. With the console off
nothing is marked, and the delivery path does nothing more.

A tail event's status per destination (:func:`event_statuses`) comes from
its newest record: ``delivered``, ``retrying``, ``dead``; ``queued`` when a
traced event has no record yet; ``not traced`` when its batch was over the
budget (the console says so rather than guess).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from redis import Redis
from redis.client import Pipeline

from collector.config.defaults import REDIS_KEY_PREFIX

TRACE_PREFIX = REDIS_KEY_PREFIX + "trace:"
TRACE_FIELD = "trace"  # the optional key of a traced delivery in an outbox entry
TRACED_EVENTS_PER_SECOND = 50  # per collector process
ATTEMPTS_KEPT = 500  # per site
TRACE_SECONDS = 24 * 3600
MAX_ANSWER_CHARS = 500
MAX_REQUEST_BODY_CHARS = 4096

QUEUED, DELIVERED, RETRYING, DEAD, NOT_TRACED = "queued", "delivered", "retrying", "dead", "not traced"
STATUSES: tuple[str, ...] = (QUEUED, DELIVERED, RETRYING, DEAD, NOT_TRACED)
_STATUS_OF_OUTCOME = {"delivered": DELIVERED, "retry": RETRYING, "dead": DEAD, "unsent": QUEUED}


def trace_key(site: str) -> str:
    return TRACE_PREFIX + site


class TraceBudget:
    """At most ``per_second`` traced events per clock second in this process; a batch is traced whole or not at all."""

    def __init__(self, per_second: int = TRACED_EVENTS_PER_SECOND, clock: Callable[[], float] = time.monotonic):
        self._per_second = per_second
        self._clock = clock
        self._second = -1
        self._spent = 0
        self._lock = threading.Lock()

    def take(self, events: int) -> bool:
        """Whether a batch of ``events`` may be traced; if so, it is charged."""
        with self._lock:
            second = int(self._clock())
            if second != self._second:
                self._second, self._spent = second, 0
            if self._spent + events > self._per_second:
                return False
            self._spent += events
            return True


def add_records(pipe: Pipeline, site: str, records: Iterable[str]) -> None:
    """Queue the writes of a job's attempt records on ``pipe`` (newest first, capped, expiring)."""
    key = trace_key(site)
    pipe.lpush(key, *records)
    pipe.ltrim(key, 0, ATTEMPTS_KEPT - 1)
    pipe.expire(key, TRACE_SECONDS)


def site_records(redis: Redis, site: str) -> list[dict[str, Any]]:
    """The site's attempt records, newest first."""
    return [json.loads(raw) for raw in redis.lrange(trace_key(site), 0, ATTEMPTS_KEPT - 1)]


def records_by_event(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each event id's records, newest first (a Depict record names every event of its array)."""
    by_event: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        for event_id in record.get("event_ids", ()):
            by_event.setdefault(event_id, []).append(record)
    return by_event


def event_statuses(destinations: Iterable[str], traced: bool, records: list[dict[str, Any]]) -> dict[str, str]:
    """Per destination the event goes to, its status (see the module's docstring); ``records`` newest first."""
    statuses = {}
    for destination in destinations:
        newest = next((record for record in records if record.get("destination") == destination), None)
        if newest is not None:
            statuses[destination] = _STATUS_OF_OUTCOME.get(newest.get("outcome", ""), QUEUED)
        else:
            statuses[destination] = QUEUED if traced else NOT_TRACED
    return statuses
