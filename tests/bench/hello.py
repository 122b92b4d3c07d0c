"""The ingest baseline: a hello-world Flask app, served by the same gunicorn settings as the collector.

``POST /collect`` reads the body (any server must) and answers a constant
202; ``GET /`` answers for the readiness check. Whatever the collector does
beyond this (parsing, validation, mapping, the rate limiter, the Redis round
trips, metrics, the cookie) is what the ingest ratio measures.
"""

from __future__ import annotations

from flask import Flask, Response, request

app = Flask(__name__)


@app.get("/")
def ready() -> str:
    return "hello, world"


@app.post("/collect")
def collect() -> Response:
    request.get_data()
    return Response("hello, world", status=202, mimetype="text/plain")
