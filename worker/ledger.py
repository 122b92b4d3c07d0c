"""Which events of a job already reached the vendor, so a retried or recovered run of it skips them.

A job carries many deliveries and RQ retries a job as a whole; without this
record, one failed Commerce event would resend the nineteen that succeeded.
It is one small hash per job, ``collector:ledger:<job id>``, of the event ids
delivered (a Depict delivery is an array of events), written the moment a
vendor says 2xx, so a worker killed mid-job leaves at most the requests in
flight unrecorded. A retried run and a run recovered after its worker was
killed are the same RQ job, so they find it. When the job ends (delivered,
dead-lettered or returned to the outbox) the record is kept only
:data:`LEDGER_GRACE_SECONDS` more: a worker killed after its job's last
request but before RQ recorded the job as finished leaves it to be run
again as abandoned, and that run must find everything delivered. So a
delivered event holds a few bytes of Redis for two minutes, not for hours.
It expires anyway after ``retry_for_seconds`` plus
:data:`LEDGER_MARGIN_SECONDS`, should a job vanish.

The sends of a process share their writes (:class:`GroupCommit`): a send
whose vendor said 2xx holds its lane until its mark is in Redis, so a
process never has more requests sent but unrecorded than it has lanes
(``worker.sender.unrecorded_at_most``); marks that arrive while a write is
on its way go together in the next one. One round trip per answer cost a
delivery process as much CPU as its HTTP requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from redis import Redis

from collector.config.schema import DeliveryPolicy
from collector.storage.outbox import KEY_PREFIX

LEDGER_MARGIN_SECONDS = 3600
LEDGER_GRACE_SECONDS = 120  # longer than RQ takes to see a killed job as abandoned and run it again
_EXPIRING_KEPT = 1024  # job keys a process remembers having given an expiry (a few jobs run at a time)


def ledger_seconds(policy: DeliveryPolicy) -> int:
    return int(policy.retry_for_seconds) + LEDGER_MARGIN_SECONDS


def ledger_key(job_key: str) -> str:
    return f"{KEY_PREFIX}ledger:{job_key}"


def _without(delivery: dict[str, Any], delivered: set[str]) -> dict[str, Any] | None:
    """The delivery minus its events already delivered, or None when nothing is left."""
    keep = [index for index, event_id in enumerate(delivery["event_ids"]) if event_id not in delivered]
    if not keep:
        return None
    if len(keep) == len(delivery["event_ids"]):
        return delivery
    event_ids = [delivery["event_ids"][index] for index in keep]
    return {**delivery, "body": [delivery["body"][index] for index in keep], "event_ids": event_ids}


def _fields(event_ids: list[str]) -> list[str]:
    """``HSET``'s field-value pairs: each event id, with an empty value."""
    return [part for event_id in event_ids for part in (event_id, "")]


class DeliveryLedger:
    def __init__(self, redis: Redis, window_seconds: int):
        self._redis = redis
        self._window = window_seconds
        self._expiring: set[str] = set()  # jobs whose record this process has given its expiry

    def undelivered(self, job_key: str, deliveries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The job's deliveries still owed, each trimmed to the events not yet delivered."""
        delivered = {value.decode() if isinstance(value, bytes) else value for value in self._redis.hkeys(ledger_key(job_key))}
        if not delivered:
            return list(deliveries)
        remaining = [_without(delivery, delivered) for delivery in deliveries]
        return [delivery for delivery in remaining if delivery is not None]

    def mark_delivered(self, marks: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Record ``(job key, delivery)`` pairs as delivered, in one round trip.

        A job's record gets its expiry with its first write from this process
        (later writes need none: the record outlives the job's retries), so
        a write is usually one ``HSET``, not a pipeline of two commands.
        """
        by_job: dict[str, list[str]] = {}
        for job_key, delivery in marks:
            by_job.setdefault(job_key, []).extend(delivery["event_ids"])
        fresh = [job_key for job_key in by_job if job_key not in self._expiring]
        if len(by_job) == 1 and not fresh:
            job_key, events = next(iter(by_job.items()))
            self._redis.execute_command("HSET", ledger_key(job_key), *_fields(events))
            return
        pipe = self._redis.pipeline(transaction=False)
        for job_key, events in by_job.items():
            pipe.execute_command("HSET", ledger_key(job_key), *_fields(events))
            if job_key in fresh:
                pipe.expire(ledger_key(job_key), self._window)
        pipe.execute()
        self._remember_expiring(fresh)

    def _remember_expiring(self, job_keys: list[str]) -> None:
        if len(self._expiring) + len(job_keys) > _EXPIRING_KEPT:
            self._expiring.clear()  # the next write of each job sets its expiry again: harmless
        self._expiring.update(job_keys)

    def close(self) -> None:
        """Give the ledger's connection back (it holds one of its own, ``runtime.ledger_connection``)."""
        self._redis.close()

    def forget(self, job_key: str) -> None:
        """The job has ended: keep its record only as long as a run of it as abandoned could still come."""
        self._redis.expire(ledger_key(job_key), LEDGER_GRACE_SECONDS)
        self._expiring.discard(job_key)


class GroupCommit:
    """Marks from many sends, written together; :meth:`mark_delivered` returns once its marks are in Redis.

    It runs on the delivery process's event loop (``worker.sender``). The
    first send to arrive while no write is under way starts one, with every
    mark waiting; marks that arrive meanwhile go together in the next. The
    Redis call runs in a thread of its own (redis-py blocks), so the loop
    goes on sending meanwhile. A failed write raises in every send whose
    mark it carried, as a send's own write would have.
    """

    def __init__(self, ledger: DeliveryLedger, executor: Executor):
        self._ledger = ledger
        self._executor = executor
        self._waiting: list[tuple[str, Sequence[dict[str, Any]], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def mark_delivered(self, job_key: str, deliveries: Sequence[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        written = loop.create_future()
        self._waiting.append((job_key, deliveries, written))
        if self._writer is None:
            self._writer = loop.create_task(self._write_until_none_wait())
        await written

    async def _write_until_none_wait(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                marks = [(job_key, delivery) for job_key, deliveries, _ in batch for delivery in deliveries]
                try:
                    await loop.run_in_executor(self._executor, self._ledger.mark_delivered, marks)
                except Exception as error:  # handed to each waiting send, raised there
                    for *_, written in batch:
                        if not written.done():
                            written.set_exception(error)
                else:
                    for *_, written in batch:
                        if not written.done():
                            written.set_result(None)
        finally:
            self._writer = None
