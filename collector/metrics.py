"""Prometheus metrics of the collector, served at ``GET /metrics``.

Counters are module-level (prometheus_client's registry is per process).
Under gunicorn, set ``PROMETHEUS_MULTIPROC_DIR`` (``collector serve`` does)
so every worker process's counts are added up. Queue depths are read from
Redis at scrape time, so the worker processes need no metrics port.
"""

from __future__ import annotations

import os

from flask import Blueprint, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from redis import RedisError

from collector.extensions import collector_state
from collector.queue import pending_entries

EVENTS = Counter("collector_events_total", "Events received by /collect, by site and outcome", ["site", "outcome"])
REQUESTS = Counter("collector_collect_requests_total", "Requests to /collect, by status code", ["status"])
LATENCY = Histogram(
    "collector_collect_seconds",
    "Time to answer /collect",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

bp = Blueprint("metrics", __name__)


class OutboxDepth:
    """Reads the outbox lengths from Redis when Prometheus scrapes."""

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        gauge = GaugeMetricFamily(
            "collector_outbox_entries", "Outbox entries (one per /collect request) waiting for a worker", labels=["outbox"]
        )
        try:
            depths = pending_entries(collector_state().redis)
        except RedisError:  # a scrape must still answer while Redis is down
            depths = {}
        for key, depth in depths.items():
            gauge.add_metric([key], depth)
        yield gauge


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
    depth = OutboxDepth()
    registry.register(depth)
    try:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
    finally:
        registry.unregister(depth)
