"""The ingest floor, the ingest stage's baseline: the cheapest durable collector, under the same gunicorn settings.

``POST /collect`` parses the body as JSON and appends it to one Redis list
(about two thirds of hello world's requests/s on the bench machine). No
validation, no mapping, no dedupe, no rate limit, no cookie: the server, a
JSON parse and one Redis round trip, what any collector that keeps what it
acknowledged must pay. The ingest target is ``/collect`` >= 0.5 of its
requests/s and p99 <= 3x its p99; the cost stage (``cost.py``) uses it with
a bare HTTP client as the floor of the whole system's CPU per event.
"""

from __future__ import annotations

import json
import os
from functools import cache

from flask import Flask, Response, request
from redis import Redis

FLOOR_LIST = "bench:floor"

app = Flask(__name__)


@cache
def _redis() -> Redis:
    return Redis.from_url(os.environ["REDIS_URL"])


@app.get("/")
def ready() -> str:
    return "floor"


@app.post("/collect")
def collect() -> Response:
    raw = request.get_data()
    json.loads(raw)
    _redis().rpush(FLOOR_LIST, raw)
    return Response("queued", status=202, mimetype="text/plain")
