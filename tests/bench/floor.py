"""The ingest floor: the cheapest durable collector, served by the same gunicorn settings.

``POST /collect`` parses the body as JSON and appends it to one Redis list,
what FIELD-NOTES measured at about 64% of hello world. No validation, no
mapping, no dedupe, no rate limit, no cookie: it shows how much of the 60%
target the server, a JSON parse and one Redis round trip leave for the rest.
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
