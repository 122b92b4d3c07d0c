"""What still waits for delivery, per destination, and how long the oldest event has waited (the lag).

Read at scrape time by ``/metrics`` and by the console. An event waits
either in an outbox (compressed entries, ``collector/storage/outbox.py``) or in an RQ
job: queued, running, or scheduled for a retry. Each job's meta holds when
its oldest delivery was accepted (set by the dispatcher), so the lag needs
no job's payload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis import Redis
from rq.job import Job

from collector.config.defaults import DESTINATIONS
from collector.storage.outbox import OUTBOX_REGISTRY, decode_entry
from worker.dispatch import OLDEST_QUEUED_AT, delivery_queue


@dataclass(frozen=True)
class Backlog:
    destination: str
    outbox_entries: int
    jobs_waiting: int
    jobs_running: int
    jobs_retrying: int
    oldest_queued_at: float | None

    def lag_seconds(self, now: float) -> float:
        """Age of the oldest undelivered event; 0 when nothing waits."""
        return max(0.0, now - self.oldest_queued_at) if self.oldest_queued_at is not None else 0.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _oldest_in_outboxes(redis: Redis, destination: str) -> tuple[int, float | None]:
    outboxes = [_text(key) for key in redis.smembers(OUTBOX_REGISTRY)]
    mine = [key for key in outboxes if key.rsplit(":", 1)[-1] == destination]
    if not mine:
        return 0, None
    with redis.pipeline(transaction=False) as pipe:
        for key in mine:
            pipe.llen(key)
            pipe.lindex(key, 0)
        answers = pipe.execute()
    entries, oldest = 0, None
    for length, head in zip(answers[::2], answers[1::2]):
        entries += int(length)
        if head:
            first = min(float(delivery.get("queued_at") or 0) for delivery in decode_entry(head))
            oldest = first if oldest is None else min(oldest, first)
    return entries, oldest


def _oldest_in_jobs(redis: Redis, job_ids: list[str]) -> float | None:
    if not job_ids:
        return None
    with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), "meta")
        metas = pipe.execute()
    times = []
    for meta in metas:
        if meta:
            value = json.loads(meta).get(OLDEST_QUEUED_AT)
            if value:
                times.append(float(value))
    return min(times) if times else None


def backlog_of(redis: Redis, destination: str) -> Backlog:
    queue = delivery_queue(redis, destination)
    waiting = queue.get_job_ids()
    running = queue.started_job_registry.get_job_ids(cleanup=False)  # a scrape only reads
    retrying = queue.scheduled_job_registry.get_job_ids(cleanup=False)
    entries, oldest_entry = _oldest_in_outboxes(redis, destination)
    oldest_job = _oldest_in_jobs(redis, [*waiting, *running, *retrying])
    known = [moment for moment in (oldest_entry, oldest_job) if moment is not None]
    return Backlog(destination, entries, len(waiting), len(running), len(retrying), min(known) if known else None)


def backlogs(redis: Redis) -> list[Backlog]:
    """Every destination's backlog."""
    return [backlog_of(redis, destination) for destination in DESTINATIONS]
