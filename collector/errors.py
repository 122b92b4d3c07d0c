"""One JSON error shape for every error the collector answers.

``{"error": {"code": 422, "message": "...", "details": {...}}}`` — the
snippet, a site owner's curl and the tests all read the same keys. Raise a
:class:`CollectorError` subclass from a view; anything Werkzeug raises
(404, 405, 413, 429 from the rate limiter) is given the same shape.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import HTTPException


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


def error_body(code: int, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _log_refusal(code: int, message: str) -> None:
    """One line per refused request: the reason, never the body (it may hold personal data)."""
    log.warning("%s %s refused with %d: %s", request.method, request.path, code, message)


def _collector_error(error: CollectorError) -> tuple[Response, int, dict[str, str]]:
    if error.code < 500:
        _log_refusal(error.code, error.message)
    return jsonify(error_body(error.code, error.message, error.details)), error.code, error.headers


def _http_error(error: HTTPException) -> tuple[Response, int, dict[str, str]]:
    code = error.code or 500
    if code == 413:
        _log_refusal(code, error.description or error.name)
    headers = {key: value for key, value in error.get_headers() if key.lower() == "retry-after"}
    return jsonify(error_body(code, error.description or error.name)), code, headers


def _rate_limited(error: RateLimitExceeded) -> tuple[Response, int, dict[str, str]]:
    from collector.extensions import collector_state, seconds_until_allowed

    limit = collector_state().config.settings.rate_limit
    message = f"too many requests from this address (more than {limit}); retry after Retry-After seconds"
    return jsonify(error_body(429, message)), 429, {"Retry-After": str(seconds_until_allowed())}


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(CollectorError, _collector_error)
    app.register_error_handler(RateLimitExceeded, _rate_limited)
    app.register_error_handler(HTTPException, _http_error)
