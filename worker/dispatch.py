"""Outbox -> RQ jobs of many deliveries each.

``/collect`` appends one entry (a compressed list of deliveries) per request
to one outbox list per site and destination (``collector/storage/outbox.py``). A
dispatcher thread in every ``collector worker`` takes whole entries from the
head of an outbox, up to ``deliveries_per_job`` deliveries, and, in one
MULTI/EXEC, creates the RQ job that carries them and trims them off the
outbox: an entry is in the outbox or in a job, never in both or neither.
One dispatcher at a time works an outbox, under a short Redis lock.

It keeps only ``MAX_WAITING_JOBS`` jobs waiting in a destination's queue: a
backlog stays in the outbox, compressed, where it costs a sixth of what it
would as RQ jobs, and a job that ends wakes the dispatcher for the next.

Locks that outlive their owner. Redis persists its keys, locks included,
across a restart (AOF), and a process that loses Redis cannot release what
it holds. So each lock here names its owner (``host:pid``, see
:func:`owner_token`): its owner takes it again at once after a reconnect,
and a process on the same host takes over a lock whose owner process is
gone (a SIGKILLed delivery process, restarted by its supervisor), instead of
waiting out the lock's expiry. A lock held from another host still expires
by itself. RQ's scheduler lock gets the same treatment in ``process.py``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

from redis import Redis, RedisError
from rq import Queue, Retry
from rq.intermediate_queue import IntermediateQueue
from rq.utils import now

from collector.config.schema import DeliveryPolicy
from collector.storage.outbox import KEY_PREFIX, OUTBOX_REGISTRY, WAKE_LIST, decode_entry
from collector.storage.redis_server import OutageLog, redis_address
from worker.breaker import Breaker
from worker.job_data import JobDataSerializer

log = logging.getLogger(__name__)

JOB_FUNCTION = "worker.jobs.forward_deliveries"
LOCK_MILLISECONDS = 30_000
IDLE_POLL_SECONDS = 1.0
FAILED_JOB_TTL_SECONDS = 365 * 24 * 3600
RETRIES_BOUNDED_BY_AGE = 1_000_000
MAINTENANCE_LOCK_SECONDS = 30
STUCK_AFTER_SECONDS = 10
MAX_WAITING_JOBS = 4
OLDEST_QUEUED_AT = "oldest_queued_at"  # in each job's meta: when its oldest delivery was accepted, for the lag
OUTAGE_REPEAT_SECONDS = 60  # the supervisor speaks for the deployment; see process.py
_RELEASE_LOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# Take a free lock, or renew one this owner holds already: 1; held by another owner: 0.
_TAKE_LOCK = """
local owner = redis.call('GET', KEYS[1])
if not owner then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if owner == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""


def owner_token(suffix: str = "") -> str:
    """Who holds a lock: ``host:pid``, then ``suffix`` (several owners in one process)."""
    token = f"{socket.gethostname()}:{os.getpid()}"
    return f"{token}:{suffix}" if suffix else token


def _process_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this host (a zombie, dead but not yet waited for, is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


def owner_is_gone(owner: str) -> bool:
    """Whether a lock's owner (an :func:`owner_token`) was a process of this host that no longer runs.

    An owner from another host, or a value in another shape (RQ's own
    tokens), is never called gone: its lock expires by itself.
    """
    host, _, rest = owner.partition(":")
    pid = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    return _process_gone(int(pid))


def release_if_owner_gone(redis: Redis, key: str) -> bool:
    """Delete the lock ``key`` when its owner is a process of this host that is gone; True if deleted."""
    owner = redis.get(key)
    if owner is None:
        return False
    text = owner.decode(errors="replace") if isinstance(owner, bytes) else str(owner)
    if not owner_is_gone(text):
        return False
    released = bool(redis.eval(_RELEASE_LOCK, 1, key, owner))
    if released:
        log.info("took over %s from process %s, which is gone", key, text)
    return released


def take_lock(redis: Redis, key: str, owner: str, milliseconds: int) -> bool:
    """Take ``key`` for ``owner`` (or renew it when ``owner`` holds it), taking it over from a gone owner."""
    if redis.eval(_TAKE_LOCK, 1, key, owner, milliseconds):
        return True
    return release_if_owner_gone(redis, key) and bool(redis.eval(_TAKE_LOCK, 1, key, owner, milliseconds))


def queue_name(destination: str) -> str:
    """Each destination has its own RQ queue, so one vendor's backlog is visible on its own."""
    return f"deliveries-{destination}"


class DeliveryIntermediateQueue(IntermediateQueue):
    """Where RQ holds a job between its dequeue and its start; stuck after seconds, not RQ's minute.

    A worker killed in that instant leaves the job here, and maintenance
    runs it again once it has been seen stuck for long enough. A live worker
    on any host moves a job on within milliseconds, so ten seconds is safe.
    """

    def should_be_cleaned_up(self, job_id: str) -> bool:
        first_seen = self.get_first_seen(job_id)
        return first_seen is not None and (now() - first_seen).total_seconds() > STUCK_AFTER_SECONDS


class DeliveryQueue(Queue):
    """An RQ queue whose maintenance recovers the jobs of a SIGKILLed worker in seconds.

    RQ takes ``rq:clean_registries:<queue>`` for 899 s while a worker cleans
    the queue's registries, which is what re-runs abandoned jobs. A worker
    killed during that pass (every few seconds here) would leave the lock
    behind, and with one worker per queue no abandoned job would run again
    for a quarter of an hour. A pass takes milliseconds, so 30 s is ample.
    """

    def acquire_maintenance_lock(self) -> bool:
        """RQ's lock, in our shape: its owner's token, so that a pass cut short by a Redis restart does not
        keep this process (or the one restarted in its place) from cleaning for ``MAINTENANCE_LOCK_SECONDS``."""
        return take_lock(self.connection, self.registry_cleaning_key, owner_token(), MAINTENANCE_LOCK_SECONDS * 1000)

    @property
    def intermediate_queue(self) -> DeliveryIntermediateQueue:
        return DeliveryIntermediateQueue(self.key, connection=self.connection)


def delivery_queue(redis: Redis, destination: str) -> DeliveryQueue:
    return DeliveryQueue(queue_name(destination), connection=redis, serializer=JobDataSerializer)


def job_timeout_seconds(policy: DeliveryPolicy) -> int:
    """Long enough for every round of concurrent sends to time out once, plus slack."""
    rounds = -(-policy.deliveries_per_job // policy.concurrency)
    return int(rounds * (policy.timeout_seconds + policy.connect_timeout_seconds)) + 30


def deliveries_for_one_job(entries: list[bytes], limit: int) -> tuple[int, list[dict[str, Any]]]:
    """How many whole entries from the head make one job of at most ``limit`` events (at least one entry).

    A Commerce delivery is one event; a Depict delivery is an array, counted
    by its events, so that a job's size in Redis and in memory stays about
    the same whichever vendor it is for.
    """
    deliveries: list[dict[str, Any]] = []
    events = taken = 0
    for entry in entries:
        decoded = decode_entry(entry)
        size = sum(len(delivery["event_ids"]) for delivery in decoded)
        if taken and events + size > limit:
            break
        deliveries += decoded
        events += size
        taken += 1
    return taken, deliveries


class Dispatcher:
    def __init__(self, redis: Redis, policy: DeliveryPolicy):
        self._redis = redis
        self._policy = policy
        self._release = redis.register_script(_RELEASE_LOCK)
        self._owner = owner_token(uuid.uuid4().hex[:8])
        self._stop = threading.Event()
        self._outage = OutageLog(log, "delivery", redis_address(redis), OUTAGE_REPEAT_SECONDS)

    def drain_all(self) -> int:
        """Move every outbox's entries into jobs; return how many jobs were made."""
        made = 0
        for raw in sorted(self._redis.smembers(OUTBOX_REGISTRY)):
            made += self.drain(raw.decode() if isinstance(raw, bytes) else raw)
        return made

    def drain(self, outbox: str) -> int:
        _, _, site, destination = outbox.split(":", 3)
        if Breaker(self._redis, site, destination).is_open():
            return 0
        lock = f"{KEY_PREFIX}dispatch-lock:{outbox}"
        if not take_lock(self._redis, lock, self._owner, LOCK_MILLISECONDS):
            return 0
        made = 0
        try:
            while not self._stop.is_set() and self._move_one_batch(outbox):
                made += 1
        finally:
            self._release(keys=[lock], args=[self._owner])
        return made

    def _move_one_batch(self, outbox: str) -> bool:
        queue = delivery_queue(self._redis, outbox.rsplit(":", 1)[1])
        if queue.count >= MAX_WAITING_JOBS:
            return False
        taken, deliveries = deliveries_for_one_job(
            self._redis.lrange(outbox, 0, self._policy.deliveries_per_job - 1), self._policy.deliveries_per_job
        )
        if not taken:
            return False
        first = deliveries[0]
        job = Queue.prepare_data(
            JOB_FUNCTION,
            args=(deliveries,),
            timeout=job_timeout_seconds(self._policy),
            result_ttl=0,  # nothing reads a job's result; keeping it costed Redis per job
            failure_ttl=FAILED_JOB_TTL_SECONDS,
            description=f"forward {len(deliveries)} {first['destination']} deliveries of {first['site']}",
            meta={OLDEST_QUEUED_AT: min(float(delivery.get("queued_at") or 0) for delivery in deliveries)},
            # The job sets its own next interval (backoff, Retry-After) and gives up by age, not by count.
            retry=Retry(max=RETRIES_BOUNDED_BY_AGE, interval=[max(int(self._policy.retry_base_seconds), 1)]),
        )
        with self._redis.pipeline(transaction=True) as pipe:
            queue.enqueue_many([job], pipeline=pipe)
            pipe.ltrim(outbox, taken, -1)
            pipe.execute()
        return True

    def run(self) -> None:
        """Wait for the collector's wake-ups (or poll each second) and drain, until stopped.

        While Redis does not answer it retries each second and logs one line
        when that starts, one a minute while it lasts, one when it ends
        (:class:`OutageLog`); the delivery processes keep quiet meanwhile.
        """
        while not self._stop.is_set():
            try:
                self._redis.blpop([WAKE_LIST], timeout=IDLE_POLL_SECONDS)
                self._outage.back()
                self.drain_all()
            except RedisError as error:
                self._outage.lost(error)
                self._stop.wait(IDLE_POLL_SECONDS)

    def stop(self) -> None:
        self._stop.set()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="dispatcher", daemon=True)
        thread.start()
        return thread
