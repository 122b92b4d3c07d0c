"""Prometheus metrics of the whole pipeline, served by the collector at ``GET /metrics``.

What ``/collect`` did is counted here, in module-level counters
(prometheus_client's registry is per process; under gunicorn
``PROMETHEUS_MULTIPROC_DIR``, which ``collector serve`` sets, adds up every
worker process's counts). What the workers did is counted in Redis
(``collector/storage/delivery_stats.py``) and read at scrape time with the
backlog, the lag and the dead letters, so one scrape target shows it all
and the worker processes need no metrics port.
"""

from __future__ import annotations

import os
import time

from flask import Blueprint, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from redis import Redis, RedisError

from collector.extensions import collector_state
from collector.storage import delivery_stats
from collector.storage.outbox import pending_entries

EVENTS = Counter("collector_events_total", "Events received by /collect, by site and outcome", ["site", "outcome"])
REQUESTS = Counter("collector_collect_requests_total", "Requests to /collect, by status code", ["status"])
LATENCY = Histogram(
    "collector_collect_seconds",
    "Time to answer /collect",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

bp = Blueprint("metrics", __name__)


class PipelineState:
    """Reads the workers' counts, the backlog, the lag and the dead letters from Redis when Prometheus scrapes."""

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        try:
            yield from _pipeline_families(collector_state().redis)
        except RedisError:  # a scrape must still answer while Redis is down; collector_up says so
            yield GaugeMetricFamily("collector_redis_up", "Whether Redis answered this scrape", value=0)
            return
        yield GaugeMetricFamily("collector_redis_up", "Whether Redis answered this scrape", value=1)


def _pipeline_families(redis: Redis):  # noqa: ANN202 - a generator of metric families
    from worker.backlog import backlogs
    from worker.dead_letters import DeadLetters

    deliveries = CounterMetricFamily(
        "collector_delivery_events", "Events by site, destination and delivery outcome (delivered, retried, dead_lettered, returned)",
        labels=["site", "destination", "outcome"],
    )  # fmt: skip
    for (site, destination, outcome), count in sorted(delivery_stats.delivery_counts(redis).items()):
        deliveries.add_metric([site, destination, outcome], count)
    answers = CounterMetricFamily(
        "collector_vendor_answers", "Vendor answers by site, destination and status class (error: no answer)",
        labels=["site", "destination", "class"],
    )  # fmt: skip
    for (site, destination, status_class), count in sorted(delivery_stats.answer_counts(redis).items()):
        answers.add_metric([site, destination, status_class], count)
    latency = HistogramMetricFamily("collector_vendor_answer_seconds", "Time a vendor took to answer", labels=["destination"])
    for destination, histogram in sorted(delivery_stats.latency_histograms(redis).items()):
        latency.add_metric([destination], histogram.buckets, histogram.sum)
    outboxes = GaugeMetricFamily(
        "collector_outbox_entries", "Outbox entries (one per /collect request) waiting for a worker", labels=["outbox"]
    )
    for key, depth in pending_entries(redis).items():
        outboxes.add_metric([key], depth)
    jobs = GaugeMetricFamily("collector_delivery_jobs", "Delivery jobs by destination and state", labels=["destination", "state"])
    lag = GaugeMetricFamily("collector_lag_seconds", "Age of the oldest event not yet delivered (0: none waits)", labels=["destination"])
    now = time.time()
    for backlog in backlogs(redis):
        jobs.add_metric([backlog.destination, "waiting"], backlog.jobs_waiting)
        jobs.add_metric([backlog.destination, "running"], backlog.jobs_running)
        jobs.add_metric([backlog.destination, "retrying"], backlog.jobs_retrying)
        lag.add_metric([backlog.destination], backlog.lag_seconds(now))
    dead = GaugeMetricFamily("collector_dead_letters", "Dead letters waiting for replay or purge", labels=["site", "destination"])
    for (site, destination), count in sorted(DeadLetters(redis).count_by_site_and_destination().items()):
        dead.add_metric([site, destination], count)
    yield from (deliveries, answers, latency, outboxes, jobs, lag, dead)


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    return registry


@bp.get("/metrics")
def metrics() -> Response:
    registry = _registry()
    pipeline = PipelineState()
    registry.register(pipeline)
    try:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
    finally:
        registry.unregister(pipeline)
