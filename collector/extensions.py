"""Extensions made once here and bound to an app by ``create_app``.

The rate limiter keys on ``request.remote_addr``, which ``ProxyFix`` has
already resolved through the trusted proxy hops. Its counters live in the
same Redis as the events; when that Redis is down the limiter falls back to
per-process memory instead of failing the request, so a Redis outage shows
as the collector's own 503 ("retry later"), never as a limiter 500.

The limiter writes no ``X-RateLimit-*`` headers: the snippet does not read
them, and they cost two more Redis round trips on every request (and put a
``Retry-After`` on accepted answers). A refused request gets ``Retry-After``
from :func:`seconds_until_allowed`.

The limit (``rate_limit`` in the config) applies to ``POST /collect`` only.
It is given as the app's default limit, with every other endpoint exempt,
rather than with ``@limiter.limit`` on the view: flask-limiter evaluates a
decorated view's limits twice per request (in its ``before_request`` hook and
in the decorator), which cost 0.15 ms of a /collect request.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from flask import current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry

from collector import defaults
from collector.config import CollectorConfig
from collector.queue import Outbox


def _collect_limit() -> str:
    return collector_state().config.settings.rate_limit


def _not_collect() -> bool:
    return request.endpoint != "collect.collect"


limiter = Limiter(
    get_remote_address,
    default_limits=[_collect_limit],
    default_limits_exempt_when=_not_collect,
    in_memory_fallback_enabled=True,
    swallow_errors=True,
    strategy="fixed-window",
)


@dataclass(frozen=True)
class CollectorState:
    """What the views of one app share: the site config and the Redis side."""

    config: CollectorConfig
    redis: Redis
    outbox: Outbox


def connect_redis(url: str, timeout: float = defaults.DEFAULT_REDIS_TIMEOUT_SECONDS) -> Redis:
    """A client whose every call gives up within about ``2 * timeout`` when Redis is unreachable."""
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )


def seconds_until_allowed() -> int:
    """When the client that was just refused may send again: the end of the breached window."""
    limit = limiter.current_limit
    if limit is None:
        return 1
    try:
        return max(1, math.ceil(limit.window.reset_time - time.time()))
    except RedisError:
        return max(1, limit.limit.get_expiry())


def collector_state() -> CollectorState:
    return current_app.extensions["collector"]
