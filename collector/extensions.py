"""Extensions made once here and bound to an app by ``create_app``.

The rate limiter keys on ``request.remote_addr``, which ``ProxyFix`` has
already resolved through the trusted proxy hops; an IPv6 client is keyed by
its /64, since one household or phone holds a whole /64 and could otherwise
take a new address per request. The limit (``rate_limit`` in the config)
applies, each with its own count, to what strangers can reach and make the
collector work for: ``/collect``, the Segment/RudderStack ``/v1/...`` posts,
the settings document and source config their SDKs load, and the console's
pages, API and login form (whose posts have a stricter limit of their own,
:data:`~collector.config.defaults.CONSOLE_LOGIN_ATTEMPTS`). Every other endpoint
is filtered out before the limiter looks at its storage, so ``/healthz``
never waits.

Where it counts (``rate_limit_storage``):

- ``memory`` (the default): each server process counts in its own memory
  (``storage/rate_limit_storage.py``, without the timer thread of limits' own
  memory storage) and allows its share, the limit divided by the number of processes
  (``collector serve --workers``, or ``COLLECTOR_PROCESSES`` for another
  WSGI server), rounded down. The processes together never allow more
  than the limit; a client whose requests land unevenly on them can be
  refused a little before it (the server hands connections to whichever
  process is free, so a busy client's requests spread over all of them).
  It costs no Redis round trip: a third of a /collect request's time
  when counted in Redis (docs/performance.md).
- ``redis``: one exact count in the events' Redis, over a connection pool
  of its own with a quarter of /collect's Redis budget as timeout
  (:func:`limiter_timeout`); when that Redis is down or stalled the limiter
  falls back to per-process memory instead of failing the request.

The limiter writes no ``X-RateLimit-*`` headers: the snippet does not read
them (and in Redis they would cost two more round trips). A refused request
gets ``Retry-After`` from :func:`seconds_until_allowed`.

The limit is given as the app's default limit, with every other endpoint
filtered out, rather than with ``@limiter.limit`` on the view: flask-limiter
evaluates a decorated view's limits twice per request (in its
``before_request`` hook and in the decorator), which cost 0.15 ms of a
/collect request. Only the console's login form, where that does not
matter, has a decorated limit (for its posts, in place of the default).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from flask import current_app, request
from flask_limiter import Limiter
from limits import parse_many
from redis import ConnectionError as RedisConnectionError
from redis import Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry

from collector.config import defaults
from collector.config.schema import CollectorConfig, CollectorSettings, Site
from collector.inbound.enrich import client_address
from collector.storage.outbox import Outbox


def _collect_limit() -> str:
    return collector_state().process_rate_limit


def process_share(rate_limit: str, processes: int) -> str:
    """What one of ``processes`` server processes allows of ``rate_limit``: together never more than it."""
    items = parse_many(rate_limit)
    return "; ".join(f"{max(1, item.amount // processes)} per {item.multiples} {item.GRANULARITY.name}" for item in items)


_RATE_LIMITED_ENDPOINTS = frozenset(
    {
        "collect.collect",
        "sources.single",
        "sources.batch",
        "sources.segment_settings",
        "sources.rudderstack_source_config",
        "console.login",
        "console.logout",
        "console.dashboard",
        "console.replay",
        "console.purge",
        "console.api_summary",
        "console.api_dead_letters",
    }
)


def _not_limited() -> bool:
    return request.endpoint not in _RATE_LIMITED_ENDPOINTS


def limit_for_this_process(settings: CollectorSettings, processes: int, limit: str) -> str:
    """What this process allows of ``limit``: all of it when counted in Redis, else its share among ``processes``."""
    if settings.rate_limit_storage == "redis":
        return limit
    return process_share(limit, max(1, processes))


def client_address_key() -> str:
    """The client's address as the rate limit counts it: IPv4 as is, IPv6 by its /64."""
    return client_address(request.remote_addr)


limiter = Limiter(
    client_address_key,
    default_limits=[_collect_limit],
    in_memory_fallback_enabled=True,
    swallow_errors=True,
    strategy="fixed-window",
)
limiter.request_filter(_not_limited)


@dataclass(frozen=True)
class CollectorState:
    """What the views of one app share: the site config and the Redis side."""

    config: CollectorConfig
    redis: Redis
    outbox: Outbox
    allowed_origins: frozenset[str]
    write_keys: Mapping[str, tuple[Site, bool]]  # Segment/RudderStack write key -> (site, is a server key)
    process_rate_limit: str  # what this process allows of the rate limit (all of it when counted in Redis)
    keeps_live_tail: bool = True  # only the console and the demo read it; without them it is not written


def queue_timeout(settings: CollectorSettings) -> float:
    """Half of /collect's Redis budget for the enqueue (or a readiness ping)."""
    return settings.redis_timeout_seconds / 2


def limiter_timeout(settings: CollectorSettings) -> float:
    """A quarter each for the limiter's count and, after a failure, its storage check.

    On a stalled Redis flask-limiter first times out on its counter, then
    pings its storage before falling back to memory: two waits before ours.
    Their sum with the enqueue's stays within ``redis_timeout_seconds``.
    """
    return settings.redis_timeout_seconds / 4


def connect_redis(url: str, timeout: float = defaults.DEFAULT_REDIS_TIMEOUT_SECONDS) -> Redis:
    """A client whose every call gives up within ``timeout`` when Redis is stalled.

    A refused or dropped connection is tried once more at once (a restarted
    Redis leaves the pool's connections stale); a timeout is not, so a
    stalled Redis costs one ``timeout`` per call.
    """
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
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
