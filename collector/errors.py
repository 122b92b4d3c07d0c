"""One JSON error shape for every error the collector answers.

``{"error": {"code": 422, "message": "...", "details": {...}}}`` — the
snippet, a site owner's curl and the tests all read the same keys. Raise a
:class:`CollectorError` subclass from a view; anything Werkzeug raises
(404, 405, 413, 429 from the rate limiter) is given the same shape.

Every refusal (a 4xx the collector chose, not a 404 or 405 of routing) is
logged as one warning with its reason, never the body, through
:class:`RefusalLog`: at most :data:`~collector.config.defaults.REFUSAL_LOG_LINES_PER_MINUTE`
lines a minute per process, so that a flood of bad requests cannot flood
the logs; the refusals past it are counted and the next line says how many.
A reason can quote what the client sent (an unknown site's name): e-mail
addresses and secret-looking URL parameters in it are masked as the
console masks them (``observe/masking.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import HTTPException

from collector.config import defaults
from collector.observe.masking import masked_text

log = logging.getLogger(__name__)


class CollectorError(Exception):
    """Base of the errors a view raises to answer the client."""

    code = 400
    message = "bad request"

    def __init__(self, message: str | None = None, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details
        self.headers = headers or {}


class BadRequest(CollectorError):
    """The request as a whole cannot be read: not JSON, wrong envelope, no events."""


class UnknownSite(CollectorError):
    """The ``site`` named in the body is not in the configuration."""

    message = "unknown site"


class OriginNotAllowed(CollectorError):
    """The page's Origin is not one of the site's configured origins."""

    code = 403
    message = "origin not allowed for this site"


class EventsRejected(CollectorError):
    """Every event of the batch failed validation; ``details`` says why, per event."""

    code = 422
    message = "no event was valid"


class BudgetExceeded(CollectorError):
    """The batch would pass one of the site's budgets (``[sites.NAME.limits]``); nothing was queued."""

    code = 429
    message = "over this site's budget; retry after Retry-After seconds"


class QueueUnavailable(CollectorError):
    """Redis could not take the events; nothing was accepted, the client should retry."""

    code = 503
    message = "events could not be queued, retry later"


class RateLimited(CollectorError):
    """Over a per-address rate limit (flask-limiter's ``RateLimitExceeded``, in our shape)."""

    code = 429


class RefusalLog:
    """Refusal lines, at most ``per_minute`` a minute (a token bucket that holds a minute's worth)."""

    def __init__(self, per_minute: int = defaults.REFUSAL_LOG_LINES_PER_MINUTE, clock: Callable[[], float] = time.monotonic):
        self._per_second = per_minute / 60
        self._capacity = float(per_minute)
        self._tokens = float(per_minute)
        self._clock = clock
        self._at = clock()
        self._unlogged = 0
        self._lock = threading.Lock()

    def _take(self) -> int | None:
        """None when over the budget; else how many refusals went unlogged before this one."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._per_second)
            self._at = now
            if self._tokens < 1:
                self._unlogged += 1
                return None
            self._tokens -= 1
            unlogged, self._unlogged = self._unlogged, 0
            return unlogged

    def refused(self, code: int, message: str, key: str | None = None, path: str | None = None) -> None:
        """``METHOD /path refused with CODE: reason``, and the write key's name where there is one (never the key)."""
        unlogged = self._take()
        if unlogged is None:
            return
        line, args = "%s %s refused with %d: %s", [request.method, masked_text(path or request.path), code, masked_text(message)]
        if key:
            line, args = line + " (write key: %s)", [*args, key]
        if unlogged:
            line, args = line + " [and %d refusals before it, not logged]", [*args, unlogged]
        log.warning(line, *args)


def error_body(code: int, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def log_refusal(code: int, message: str, key: str | None = None, path: str | None = None) -> None:
    """One line per refused request (within the app's :class:`RefusalLog`): the reason, never the body.

    ``key``: the name of the write key; ``path``: the request's path when it must not be logged as it is.
    """
    current_app.extensions["collector_refusals"].refused(code, message, key, path)


def error_response(error: CollectorError) -> tuple[Response, int, dict[str, str]]:
    """The error's answer in the collector's shape; a refusal (a 4xx) is logged."""
    if error.code < 500:
        log_refusal(error.code, error.message)
    return jsonify(error_body(error.code, error.message, error.details)), error.code, error.headers


def _http_error(error: HTTPException) -> tuple[Response, int, dict[str, str]]:
    code = error.code or 500
    if code == 413:
        log_refusal(code, error.description or error.name)
    headers = {key: value for key, value in error.get_headers() if key.lower() == "retry-after"}
    return jsonify(error_body(code, error.description or error.name)), code, headers


def rate_limit_refusal(message: str | None = None) -> RateLimited:
    """The 429 of the per-address rate limit, with ``Retry-After`` the end of the breached window."""
    from collector.extensions import collector_state, seconds_until_allowed

    limit = collector_state().config.settings.rate_limit
    message = message or f"too many requests from this address (more than {limit}); retry after Retry-After seconds"
    return RateLimited(message, headers={"Retry-After": str(seconds_until_allowed())})


def _rate_limited(_: RateLimitExceeded) -> tuple[Response, int, dict[str, str]]:
    return error_response(rate_limit_refusal())


def register_error_handlers(app: Flask) -> None:
    app.extensions["collector_refusals"] = RefusalLog()
    app.register_error_handler(CollectorError, error_response)
    app.register_error_handler(RateLimitExceeded, _rate_limited)
    app.register_error_handler(HTTPException, _http_error)
