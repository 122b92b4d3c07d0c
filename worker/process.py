"""``collector worker``: one process that dispatches outboxes into jobs and performs them.

It runs RQ's ``SimpleWorker`` (no fork per job: forking costs about 6x the
throughput on this machine class, and our jobs share one pooled HTTP client
that a fork could not reuse) with RQ's scheduler for retry intervals, and a
dispatcher thread that turns outbox entries into jobs.
"""

from __future__ import annotations

import logging

from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from collector.config import CollectorConfig
from collector.defaults import DESTINATIONS
from worker.dispatch import Dispatcher, delivery_queue
from worker.runtime import WorkerRuntime, install

log = logging.getLogger(__name__)


def worker_redis(url: str) -> Redis:
    """RQ blocks on BLPOP for minutes, so this connection has no read timeout (only a connect one)."""
    return Redis.from_url(url, socket_connect_timeout=5, socket_keepalive=True, health_check_interval=30)


def build_worker(redis: Redis) -> SimpleWorker:
    queues = [delivery_queue(redis, destination) for destination in DESTINATIONS]
    return SimpleWorker(queues, connection=redis, serializer=JSONSerializer)


def run_worker(config: CollectorConfig, redis_url: str, burst: bool = False) -> None:
    """Work until stopped (SIGTERM/SIGINT), or, with ``burst``, until the outboxes and queues are empty."""
    redis = worker_redis(redis_url)
    runtime = WorkerRuntime.start(config, redis)
    install(runtime)
    dispatcher = Dispatcher(redis, config.settings.delivery)
    try:
        if burst:
            dispatcher.drain_all()
            build_worker(redis).work(burst=True, logging_level="WARNING")
            return
        dispatcher.start_thread()
        build_worker(redis).work(with_scheduler=True, logging_level="INFO")
    finally:
        dispatcher.stop()
        runtime.close()
        install(None)
