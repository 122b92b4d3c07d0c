"""``collector worker``: a supervisor with one delivery process per destination.

- Each destination's queue has its own child process, so a slow or failing
  vendor never delays the other.
- A child runs :class:`DeliveryWorker`, RQ's ``SimpleWorker`` (no fork per
  job: forking costs about 6x the throughput here, and jobs share one pooled
  HTTP client a fork could not reuse) with a heartbeat thread. The heartbeat
  keeps a running job's entry in RQ's started registry alive for
  ``HEARTBEAT_TTL_SECONDS`` at a time, so a job whose process was SIGKILLed
  is seen as abandoned within that time, and RQ's maintenance (every
  ``MAINTENANCE_SECONDS`` instead of RQ's default 10 minutes, also while the
  queue is idle, under a lock that a killed worker holds for seconds, not
  15 minutes) runs it again.
- The supervisor runs the dispatcher thread (outbox -> jobs) and restarts a
  child that died. A child whose supervisor died stops too.
- Redis going away does not end a process (see :func:`run_delivery_process`):
  RQ's work loop is left quietly at the first failed command, the process
  probes Redis once a second (nearly no CPU) and starts a new RQ worker when
  it answers. The supervisor's dispatcher logs the outage (one line when it
  starts, one a minute, one when it ends); the delivery processes keep quiet
  about it, so an outage neither fills the log nor respawns processes.
- What a delivery process holds in Redis survives a Redis restart (AOF),
  and a lock cannot be released while Redis is away. So RQ's scheduler lock
  is held under the process's own name (``host:pid``): the process takes it
  again at once after a reconnect, and a process restarted in place of a
  SIGKILLed one takes over its dead predecessor's lock, instead of waiting
  out its 61 s (``worker/dispatch.py`` does the same for its own locks). The
  job a process was running when Redis went away is run again as soon as
  Redis answers, not once its lease lapses.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from rq import SimpleWorker, Worker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.job_lifecycle import call_exception_handlers
from rq.scheduler import RQScheduler
from rq.worker import WorkerStatus

from collector.config.defaults import DESTINATIONS
from collector.config.schema import CollectorConfig, DeliveryPolicy
from collector.storage.redis_server import OutageLog, redis_address
from worker.dispatch import DeliveryQueue, Dispatcher, owner_token, queue_name, release_if_owner_gone
from worker.job_data import JobDataSerializer
from worker.runtime import WorkerRuntime, install

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2
HEARTBEAT_TTL_SECONDS = 10
MAINTENANCE_SECONDS = 5
IDLE_WAKE_SECONDS = 1
RECONNECT_SECONDS = 1.0
BUSY_STOP_MARGIN_SECONDS = 15  # after the last answer: the job's figures, its outbox return, RQ's bookkeeping
IDLE_STOP_GRACE_SECONDS = 8.0  # an idle child takes about 1 s (RQ's scheduler sleeps 1 s between passes); more on a loaded machine
SUPERVISE_SECONDS = 0.5
READ_TIMEOUT_SECONDS = 10
PROBE_TIMEOUT_SECONDS = 2
OUTAGE_REPEAT_SECONDS = 600  # a delivery process cut off alone says so this often; the supervisor speaks for an outage
# CPython's defaults (700, 10, 10) ran a full garbage collection every few thousand deliveries, and each
# scanned every dict of the job in hand (5,000 deliveries): 15% of a delivery process's CPU and pauses of
# tens of ms in its event loop, at 50 ms 12% fewer events/s (docs/delivery.md). Deliveries make few cycles.
GARBAGE_COLLECTION_THRESHOLDS = (100_000, 50, 100)
LOST = (RedisConnectionError, RedisTimeoutError)


def collect_garbage_less_often() -> None:
    gc.set_threshold(*GARBAGE_COLLECTION_THRESHOLDS)


def worker_redis(url: str) -> Redis:
    """The longest command a worker sends blocks for a second (an idle dequeue), so a read that
    takes ``READ_TIMEOUT_SECONDS`` means a connection gone silent: it raises, and the worker reconnects."""
    return Redis.from_url(
        url, socket_connect_timeout=5, socket_timeout=READ_TIMEOUT_SECONDS, socket_keepalive=True, health_check_interval=30
    )


def redis_probe(url: str) -> Redis:
    """A client that tries once: a probe each second while Redis is away, not redis-py's retries with backoff."""
    return Redis.from_url(
        url, socket_connect_timeout=PROBE_TIMEOUT_SECONDS, socket_timeout=PROBE_TIMEOUT_SECONDS, retry=Retry(NoBackoff(), 0)
    )


def wait_for_redis(probe: Redis, stopping: threading.Event, outage: OutageLog) -> bool:
    """Return once ``probe`` answers PING (True) or ``stopping`` is set (False), trying each ``RECONNECT_SECONDS``."""
    while not stopping.is_set():
        try:
            probe.ping()
        except RedisError as error:
            outage.lost(error)
            stopping.wait(RECONNECT_SECONDS)
            continue
        outage.back()
        return True
    return False


class RedisLost(StopRequested):
    """Redis stopped answering: RQ's work loop ends quietly on it (it is RQ's own stop), and the process waits for Redis.

    Left to itself, RQ logs every retry of a lost connection, or quits its
    loop with a traceback and then fails again in its teardown.
    """


@contextmanager
def redis_lost_on_connection_error() -> Iterator[None]:
    try:
        yield
    except LOST as error:
        raise RedisLost(type(error).__name__) from error


class _LifecycleChatter(logging.Filter):
    """After a first outage, RQ's lines for starting and stopping a worker and its scheduler are left out.

    A delivery process starts a new RQ worker (and scheduler) after each
    reconnect; the outage's own lines say what happened.
    """

    MESSAGES = frozenset(
        {
            "Worker %s: started with PID %d, version %s",
            "Worker %s: subscribing to channel %s",
            "*** Listening on %s...",
            "Worker %s: unsubscribing from channel %s",
            "Acquired scheduler lock for %s",
            "Scheduler for %s started with PID %s",
        }
    )
    # The scheduler's stop: a fork of the worker, it cannot know whether its worker stops for good or for an outage.
    ALWAYS = frozenset({"Scheduler stopping, releasing locks for %s...", "Scheduler with PID %d has stopped"})

    def __init__(self) -> None:
        super().__init__()
        self.quiet = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg in self.ALWAYS or (self.quiet and record.msg in self.MESSAGES))


LIFECYCLE_CHATTER = _LifecycleChatter()


class OutageAwareQueue(DeliveryQueue):
    """The worker's dequeue, ended by :class:`RedisLost` when Redis is gone (RQ would log and retry in a loop)."""

    @classmethod
    def dequeue_any(cls, *args: Any, **kwargs: Any) -> Any:
        with redis_lost_on_connection_error():
            return super().dequeue_any(*args, **kwargs)


def worker_queue(redis: Redis, destination: str) -> OutageAwareQueue:
    """``destination``'s queue as a delivery process works it (RQ wants the worker's queues of its ``queue_class``)."""
    return OutageAwareQueue(queue_name(destination), connection=redis, serializer=JobDataSerializer)


class DeliveryWorker(SimpleWorker):
    """A SimpleWorker whose running job keeps a short, refreshed lease in the started registry.

    ``stopping`` is set by SIGTERM/SIGINT. RQ itself leaves no trace of a stop
    that came while the worker was idle (it raises ``StopRequested`` and
    ``work()`` just returns), which the process could not tell apart from a
    lost Redis connection.

    With ``ignore_sigint`` (a supervised process) only SIGTERM stops it: a
    Ctrl-C at the terminal reaches the whole process group, and the
    supervisor stops its children in order (RQ would take the supervisor's
    SIGTERM after a SIGINT for a second signal, a cold shutdown).
    """

    queue_class = OutageAwareQueue

    def __init__(self, *args: Any, stopping: threading.Event | None = None, ignore_sigint: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stopping = stopping or threading.Event()
        self.ignore_sigint = ignore_sigint
        self.redis_lost = False
        self.interrupted: tuple[Any, Any] | None = None  # (job, execution) of the job Redis went away under

    # Redis going away: every place of RQ's work loop that talks to Redis ends it with RedisLost.

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        with self._noting_loss():
            super().heartbeat(timeout, pipeline)

    def set_state(self, state: str, pipeline: Any = None) -> None:
        with self._noting_loss():
            super().set_state(state, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        with self._noting_loss():
            super().check_for_suspension(burst)

    def run_maintenance_tasks(self) -> None:
        with self._noting_loss():
            super().run_maintenance_tasks()

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """RQ's dequeue; none once the process was told to stop.

        RQ installs its signal handlers only after it has started the
        scheduler; a SIGTERM before that reaches the process's own handler,
        which sets ``stopping`` but not RQ's flag. No job (None) ends RQ's
        loop, within a second of the signal.
        """
        if self.stopping.is_set():
            return None
        with self._noting_loss():
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    @contextmanager
    def _noting_loss(self) -> Iterator[None]:
        try:
            with redis_lost_on_connection_error():
                yield
        except RedisLost:
            self.redis_lost = True
            LIFECYCLE_CHATTER.quiet = True
            raise

    def _pubsub_exception_handler(self, exc: Exception, pubsub: Any, pubsub_thread: Any) -> None:
        """RQ's command thread logs each failed reconnect; the process's loop speaks for an outage."""
        if isinstance(exc, RedisConnectionError):
            time.sleep(RECONNECT_SECONDS)
            return
        super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)

    def unsubscribe(self) -> None:
        """Stop the command thread, also when Redis is gone.

        RQ's UNSUBSCRIBE is what ends the thread's wait for a message (up to
        a minute); without Redis it raises, and RQ leaves the thread running.
        A thread whose connection is gone ends on its own read error. The
        thread is told to stop before the UNSUBSCRIBE: told after, it could
        take the confirmation first and go back to waiting up to a minute for
        a subscription (redis-py 8's ``stop()`` waits for it).
        """
        thread, pubsub, self.pubsub_thread, self.pubsub = self.pubsub_thread, self.pubsub, None, None
        if thread is not None:
            thread._running.clear()
        if pubsub is not None and not self.redis_lost:
            with suppress(RedisError):
                pubsub.unsubscribe()
        if thread is not None:
            try:
                thread.stop(timeout=RECONNECT_SECONDS)
            except TypeError:  # redis-py before 7 does not wait in stop()
                thread.stop()
                thread.join(timeout=RECONNECT_SECONDS)
        if pubsub is not None:
            with suppress(RedisError):
                pubsub.close()

    def teardown(self) -> None:
        """RQ's teardown, which does not need Redis: the death of a worker that lost Redis is registered after the
        reconnect (:meth:`after_reconnect`), and its registration would expire anyway."""
        if self.scheduler:
            self.stop_scheduler()
            self.scheduler = None
        if not self.redis_lost:
            try:
                self.register_death()
            except LOST:
                self.redis_lost = True
        self.unsubscribe()

    def after_reconnect(self) -> None:
        """Once Redis answers again: unregister this worker, and let maintenance run the job Redis went away under now.

        The job's execution in the started registry would otherwise stay
        leased for up to ``HEARTBEAT_TTL_SECONDS``; its lease is set to have
        lapsed, and the new worker's first maintenance pass runs it again
        (only if it is still marked started: one that finished is left alone).
        """
        self.register_death()
        if self.interrupted is None:
            return
        job, execution = self.interrupted
        self.interrupted = None
        self.connection.zadd(job.started_job_registry.key, {execution.composite_key: 0}, xx=True)

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        if self.ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def request_stop(self, signum: int, frame: Any) -> None:
        self.stopping.set()
        try:
            super().request_stop(signum, frame)
        finally:
            if self.ignore_sigint:
                signal.signal(signal.SIGINT, signal.SIG_IGN)

    def handle_exception(self, job: Any, *exc_info: Any) -> None:
        """RQ logs a failed job at ERROR with its traceback; a job whose deliveries will be retried said so in its own line,
        and a job that failed because Redis went away is the outage's, which is logged on its own."""
        from worker.jobs import DeliveriesFailed

        if exc_info and isinstance(exc_info[1], (DeliveriesFailed, *LOST)):
            call_exception_handlers(self._exc_handlers, job, *exc_info)
            return
        super().handle_exception(job, *exc_info)

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """RQ's own, with :class:`DeliveryScheduler` in place of ``RQScheduler``."""
        self.scheduler = DeliveryScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
            name=owner_token(),
        )
        with self._noting_loss():
            for queue in self.queues:
                release_if_owner_gone(self.connection, DeliveryScheduler.get_locking_key(queue.name))
            self.scheduler.acquire_locks()
        if not self.scheduler.acquired_locks:
            return
        if burst:
            self.scheduler.enqueue_scheduled_jobs()
            self.scheduler.release_locks()
        else:
            self.scheduler.start()

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        return HEARTBEAT_TTL_SECONDS

    @property
    def dequeue_timeout(self) -> int:
        """Wake from an idle BLPOP every second.

        RQ runs maintenance (which re-runs abandoned jobs) only between
        dequeues, and an idle worker otherwise blocks for ``worker_ttl - 15``
        (405 s): the only worker of a queue would leave a job whose process
        was killed untouched for minutes once traffic stops. A stop signal
        that the kernel hands to another thread of the process also waits
        for the main thread's BLPOP to return.
        """
        return IDLE_WAKE_SECONDS

    def execute_job(self, job: Any, queue: Any) -> None:
        with self._noting_loss():
            execution = self.prepare_execution(job)
        done = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, execution, done), name="heartbeat", daemon=True)
        beat.start()
        try:
            with self._noting_loss():
                self.perform_job(job, queue, execution)
        except RedisLost:
            self.interrupted = (job, execution)
            raise
        finally:
            done.set()
            beat.join()
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, job: Any, execution: Any, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            try:
                self.maintain_heartbeats(job, execution)
            except LOST:
                continue  # Redis is away: the outage is logged once elsewhere; keep the lease once it is back
            except RedisError as error:
                self.log.warning("heartbeat failed: %s", type(error).__name__)


class _WithoutMaintenanceChatter(logging.Filter):
    """RQ logs each maintenance pass at INFO; ours runs every few seconds."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "cleaning" not in str(record.msg)


def when_parent_dies(then: Callable[[], None]) -> None:
    """Call ``then`` (from a watcher thread) once the process that started this one is gone."""
    parent_pid = os.getppid()

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(SUPERVISE_SECONDS)
        then()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class DeliveryScheduler(RQScheduler):
    """RQ's scheduler process (it puts retries due back on the queue), ended with its worker.

    RQ forks it from the worker; a worker killed with SIGKILL would leave it
    running for good, holding the queue's scheduler lock. Its worker stops it
    with SIGTERM (and waits for it); a Ctrl-C at the terminal is not for it.
    Redis going away ends it quietly (RQ logs a traceback): its worker sees
    the outage too, and starts a new one, under the same name and lock, once
    Redis answers.
    """

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def work(self) -> None:
        when_parent_dies(self.request_stop)
        try:
            super().work()
        except LOST:
            LIFECYCLE_CHATTER.quiet = True


def run_delivery_process(config: CollectorConfig, redis_url: str, destination: str, supervised: bool = False) -> None:
    """Perform ``destination``'s jobs until SIGTERM/SIGINT (or, ``supervised``, the supervisor's death),
    waiting quietly for Redis whenever it goes away."""
    from collector.observe.logs import setup_from_environment

    setup_from_environment()
    collect_garbage_less_often()
    stopping = threading.Event()
    _stop_on_signals(stopping, supervised)
    if supervised:
        when_parent_dies(lambda: os.kill(os.getpid(), signal.SIGTERM))
    logging.getLogger("rq.worker").addFilter(_WithoutMaintenanceChatter())
    for name in ("rq.worker", "rq.scheduler"):
        logging.getLogger(name).addFilter(LIFECYCLE_CHATTER)
    redis = worker_redis(redis_url)
    probe = redis_probe(redis_url)
    level = logging.DEBUG if supervised else logging.WARNING  # a supervisor's dispatcher logs the outage
    outage = OutageLog(log, f"delivery to {destination}", redis_address(redis), OUTAGE_REPEAT_SECONDS, level)
    runtime = _start_runtime(config, redis, probe, stopping, outage)
    if runtime is None:
        return
    install(runtime)
    try:
        previous: DeliveryWorker | None = None
        while wait_for_redis(probe, stopping, outage):
            try:
                if previous is not None and previous.redis_lost:
                    previous.after_reconnect()
                previous = worker = DeliveryWorker(
                    [worker_queue(redis, destination)],
                    connection=redis,
                    serializer=JobDataSerializer,
                    maintenance_interval=MAINTENANCE_SECONDS,
                    stopping=stopping,
                    ignore_sigint=supervised,
                )
                worker.work(with_scheduler=True, logging_level="INFO")
            except (RedisError, RedisLost) as error:
                _left_by_outage(previous, error, outage)
            # between workers, a signal must still stop the process (RQ's handlers point at the old worker)
            _stop_on_signals(stopping, supervised)
            if previous is not None and not previous.redis_lost:
                stopping.wait(RECONNECT_SECONDS)  # RQ's loop ended for another reason: do not spin
    finally:
        runtime.close()
        install(None)


def _stop_on_signals(stopping: threading.Event, supervised: bool) -> None:
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN if supervised else lambda *_: stopping.set())


def _start_runtime(
    config: CollectorConfig, redis: Redis, probe: Redis, stopping: threading.Event, outage: OutageLog
) -> WorkerRuntime | None:
    """The process's runtime, once Redis answers (its ledger keeps a connection); None when stopped first."""
    while wait_for_redis(probe, stopping, outage):
        try:
            return WorkerRuntime.start(config, redis, stopping)
        except LOST as error:
            outage.lost(error)
    return None


def _left_by_outage(worker: DeliveryWorker | None, error: BaseException, outage: OutageLog) -> None:
    """RQ's loop ended on a lost Redis (or failed before it began): tidy the worker up without Redis."""
    LIFECYCLE_CHATTER.quiet = True
    outage.lost(error.__cause__ or error)
    if worker is not None:
        worker.redis_lost = True
        worker.teardown()


def run_burst(config: CollectorConfig, redis_url: str) -> None:
    """Drain the outboxes and perform the jobs in this process until both are empty, then return."""
    redis = worker_redis(redis_url)
    runtime = WorkerRuntime.start(config, redis)
    install(runtime)
    try:
        dispatcher = Dispatcher(redis, config.settings.delivery)
        queues = [worker_queue(redis, destination) for destination in DESTINATIONS]
        # the dispatcher keeps only a few jobs waiting, so alternate until nothing is left
        while dispatcher.drain_all() or any(queue.count for queue in queues):
            DeliveryWorker(queues, connection=redis, serializer=JobDataSerializer).work(burst=True, logging_level="WARNING")
    finally:
        runtime.close()
        install(None)


class Supervisor:
    """Starts one delivery process per destination, restarts them when they die, runs the dispatcher."""

    def __init__(self, config: CollectorConfig, redis_url: str):
        self._config = config
        self._redis_url = redis_url
        self._context = multiprocessing.get_context("spawn")
        self._children: dict[str, multiprocessing.process.BaseProcess] = {}
        self._stopping = threading.Event()

    def _start_child(self, destination: str) -> None:
        child = self._context.Process(
            target=run_delivery_process,
            args=(self._config, self._redis_url, destination, True),
            name=f"deliver-{destination}",
        )
        # A spawned Python keeps SIGINT ignored when it starts with it ignored, so a Ctrl-C while it imports
        # gives no KeyboardInterrupt traceback; blocked meanwhile, a Ctrl-C for this process waits, not lost.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            child.start()
        finally:
            signal.signal(signal.SIGINT, handler)
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self._children[destination] = child
        log.info("delivery process for %s: pid %s", destination, child.pid)

    def child_pids(self) -> dict[str, int | None]:
        return {destination: child.pid for destination, child in self._children.items()}

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self._stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self._stopping.set())
        dispatcher = Dispatcher(worker_redis(self._redis_url), self._config.settings.delivery)
        dispatcher_thread = dispatcher.start_thread()
        for destination in DESTINATIONS:
            self._start_child(destination)
        try:
            while not self._stopping.wait(SUPERVISE_SECONDS):
                for destination, child in list(self._children.items()):
                    if not child.is_alive():
                        log.warning("delivery process for %s (pid %s) died with %s; restarting", destination, child.pid, child.exitcode)
                        self._start_child(destination)
        finally:
            dispatcher.stop()
            self._stop_children()
            dispatcher_thread.join(timeout=READ_TIMEOUT_SECONDS)  # done with Redis before whoever started it stops it

    def _stop_children(self) -> None:
        """SIGTERM every child; one still running after its grace is SIGKILLed.

        A child in the middle of a job starts no request after the SIGTERM (the
        job puts what it did not send back in its outbox), so it gets the
        time of the requests in flight (:func:`stop_grace_seconds`); an idle
        one gets ``IDLE_STOP_GRACE_SECONDS``. Killing is safe: a job cut short
        runs again once its lease lapses, with the same idempotency ids.
        """
        for child in self._children.values():
            if child.is_alive() and child.pid:
                os.kill(child.pid, signal.SIGTERM)
        started = time.monotonic()
        busy_grace = stop_grace_seconds(self._config.settings.delivery)
        redis = worker_redis(self._redis_url)
        while True:
            alive = [child for child in self._children.values() if child.is_alive()]
            if not alive:
                return
            waited = time.monotonic() - started
            for child in alive:
                grace = busy_grace if _is_busy(redis, child.pid) else IDLE_STOP_GRACE_SECONDS
                if waited > grace:
                    log.warning("%s (pid %s) did not stop %.0f s after SIGTERM; killing it", child.name, child.pid, waited)
                    child.kill()
                    child.join(timeout=5)
            time.sleep(SUPERVISE_SECONDS / 5)


def stop_grace_seconds(policy: DeliveryPolicy) -> float:
    """How long a busy delivery process may take to stop: its requests in flight, then its job's bookkeeping."""
    return policy.timeout_seconds + policy.connect_timeout_seconds + BUSY_STOP_MARGIN_SECONDS


def _is_busy(redis: Redis, pid: int | None) -> bool:
    """Whether the RQ worker in process ``pid`` says it is performing a job (unknown counts as busy)."""
    try:
        for queue_worker in Worker.all(connection=redis):
            if queue_worker.pid == pid:
                return queue_worker.get_state() == WorkerStatus.BUSY
    except RedisError:
        return True
    return False


def run_worker(config: CollectorConfig, redis_url: str, burst: bool = False) -> None:
    """``collector worker``: supervise delivery processes until stopped, or, with ``burst``, drain once."""
    collect_garbage_less_often()  # the dispatcher builds jobs of thousands of deliveries too
    if burst:
        run_burst(config, redis_url)
    else:
        Supervisor(config, redis_url).run()
