"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from redis import RedisError

from collector.extensions import collector_state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """The process answers; it says nothing about Redis."""
    return jsonify({"status": "ok"}), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready only while Redis answers: without it /collect can acknowledge nothing."""
    try:
        collector_state().redis.ping()
    except RedisError as error:
        return jsonify({"status": "unavailable", "redis": type(error).__name__}), 503
    return jsonify({"status": "ok", "redis": "ok"}), 200
