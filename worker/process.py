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
- Redis going away does not end a process: it waits and reconnects.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from redis import Redis, RedisError
from rq import SimpleWorker, Worker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.job_lifecycle import call_exception_handlers
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from collector.config import CollectorConfig
from collector.defaults import DESTINATIONS
from worker.dispatch import Dispatcher, delivery_queue, job_timeout_seconds
from worker.runtime import WorkerRuntime, install

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2
HEARTBEAT_TTL_SECONDS = 10
MAINTENANCE_SECONDS = 5
IDLE_WAKE_SECONDS = 1
RECONNECT_SECONDS = 1.0
IDLE_STOP_GRACE_SECONDS = 8.0  # an idle child takes about 1 s (RQ's scheduler sleeps 1 s between passes); more on a loaded machine
SUPERVISE_SECONDS = 0.5
READ_TIMEOUT_SECONDS = 10


def worker_redis(url: str) -> Redis:
    """The longest command a worker sends blocks for a second (an idle dequeue), so a read that
    takes ``READ_TIMEOUT_SECONDS`` means a connection gone silent: it raises, and the worker reconnects."""
    return Redis.from_url(
        url, socket_connect_timeout=5, socket_timeout=READ_TIMEOUT_SECONDS, socket_keepalive=True, health_check_interval=30
    )


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

    def __init__(self, *args: Any, stopping: threading.Event | None = None, ignore_sigint: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stopping = stopping or threading.Event()
        self.ignore_sigint = ignore_sigint

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
        """RQ logs a failed job at ERROR with its traceback; a job whose deliveries will be retried said so in its own line."""
        from worker.jobs import DeliveriesFailed

        if exc_info and isinstance(exc_info[1], DeliveriesFailed):
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
        )
        self.scheduler.acquire_locks()
        if not self.scheduler.acquired_locks:
            return
        if burst:
            self.scheduler.enqueue_scheduled_jobs()
            self.scheduler.release_locks()
        else:
            self.scheduler.start()

    def unsubscribe(self) -> None:
        """Stop listening for RQ's commands without waiting a minute.

        RQ unsubscribes, then stops the listener thread, which reads with a
        60 s timeout; redis-py 8's ``stop()`` waits for that thread. When
        the unsubscribe confirmation reached the thread before it was told
        to stop, it went back to waiting up to 60 s for a subscription, and
        the process with it. Told first, it ends on that confirmation.
        """
        if self.pubsub_thread is not None:
            self.pubsub_thread._running.clear()
        super().unsubscribe()

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
        execution = self.prepare_execution(job)
        done = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, execution, done), name="heartbeat", daemon=True)
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            beat.join()
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, job: Any, execution: Any, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            try:
                self.maintain_heartbeats(job, execution)
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
    """

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def work(self) -> None:
        when_parent_dies(self.request_stop)
        super().work()


def run_delivery_process(config: CollectorConfig, redis_url: str, destination: str, supervised: bool = False) -> None:
    """Perform ``destination``'s jobs until SIGTERM/SIGINT (or, ``supervised``, the supervisor's death),
    reconnecting when Redis goes away."""
    from collector.logs import setup_from_environment

    setup_from_environment()
    if supervised:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # its supervisor stops it, with SIGTERM
        when_parent_dies(lambda: os.kill(os.getpid(), signal.SIGTERM))
    logging.getLogger("rq.worker").addFilter(_WithoutMaintenanceChatter())
    redis = worker_redis(redis_url)
    stopping = threading.Event()
    runtime = WorkerRuntime.start(config, redis, stopping)
    install(runtime)
    try:
        while not stopping.is_set():
            worker = DeliveryWorker(
                [delivery_queue(redis, destination)],
                connection=redis,
                serializer=JSONSerializer,
                maintenance_interval=MAINTENANCE_SECONDS,
                stopping=stopping,
                ignore_sigint=supervised,
            )
            try:
                worker.work(with_scheduler=True, logging_level="INFO")
            except RedisError as error:
                log.warning("worker for %s lost redis (%s); reconnecting", destination, type(error).__name__)
            # between workers, a signal must still stop the process (RQ's handlers point at the old worker)
            signal.signal(signal.SIGTERM, lambda *_: stopping.set())
            signal.signal(signal.SIGINT, signal.SIG_IGN if supervised else lambda *_: stopping.set())
            stopping.wait(RECONNECT_SECONDS)
    finally:
        runtime.close()
        install(None)


def run_burst(config: CollectorConfig, redis_url: str) -> None:
    """Drain the outboxes and perform the jobs in this process until both are empty, then return."""
    redis = worker_redis(redis_url)
    runtime = WorkerRuntime.start(config, redis)
    install(runtime)
    try:
        dispatcher = Dispatcher(redis, config.settings.delivery)
        queues = [delivery_queue(redis, destination) for destination in DESTINATIONS]
        # the dispatcher keeps only a few jobs waiting, so alternate until nothing is left
        while dispatcher.drain_all() or any(queue.count for queue in queues):
            DeliveryWorker(queues, connection=redis, serializer=JSONSerializer).work(burst=True, logging_level="WARNING")
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

        A child finishing a job gets up to the job timeout; an idle one gets
        ``IDLE_STOP_GRACE_SECONDS``. Killing is safe: a job cut short runs
        again once its lease lapses, with the same idempotency ids.
        """
        for child in self._children.values():
            if child.is_alive() and child.pid:
                os.kill(child.pid, signal.SIGTERM)
        started = time.monotonic()
        busy_grace = job_timeout_seconds(self._config.settings.delivery)
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
    if burst:
        run_burst(config, redis_url)
    else:
        Supervisor(config, redis_url).run()
