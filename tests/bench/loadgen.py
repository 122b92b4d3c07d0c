"""Load generators for ``POST /collect``: wrk when it is on PATH, else Python threads.

``timed_load`` keeps ``connections`` connections busy for ``seconds`` and
reports requests/s and latency percentiles. With ``wrk`` installed (Debian:
``apt-get install wrk``) it runs ``wrk`` with ``collect.lua``, which builds
every request's body with fresh event ids; wrk is written in C and leaves
the cores to the servers. Without it, a Python generator does the same with
one thread and one ``http.client`` connection per simulated connection;
it competes with the servers for the same cores and can cap a fast
baseline, which the output says.

``send_batches`` posts an exact number of batches (to fill outboxes) with
the Python generator; it is bounded in count and in time.

gunicorn's sync workers close the connection after every answer; both
generators reconnect, so every request pays a TCP connect, for the
collector and its hello-world baseline alike.
"""

from __future__ import annotations

import http.client
import itertools
import json
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.bench.payload import EVENTS_PER_BATCH, HEADERS, batch_template, event_ids, new_nonce
from tests.bench.report import percentile

LUA_SCRIPT = Path(__file__).resolve().parent / "collect.lua"
REQUEST_TIMEOUT_SECONDS = 10
WRK_THREADS = 2


@dataclass(frozen=True)
class LoadResult:
    generator: str
    connections: int
    seconds: float
    requests: int  # answered, whatever the status
    errors: int  # failed connections, timeouts and answers other than 2xx
    p50_ms: float
    p99_ms: float

    @property
    def ok(self) -> int:
        return self.requests - self.errors

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds if self.seconds else 0.0


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def generator_name() -> str:
    if wrk_available():
        return f"wrk ({shutil.which('wrk')}, {WRK_THREADS} threads, Lua script {LUA_SCRIPT.name})"
    return "Python threads + http.client (wrk not on PATH: apt-get install wrk for a generator that spares the CPU)"


def timed_load(url: str, connections: int, seconds: float) -> LoadResult:
    """``connections`` connections posting batches to ``url`` for ``seconds``."""
    if wrk_available():
        return _wrk(url, connections, seconds)
    return _python(url, connections, seconds, max_requests=None)


def send_batches(url: str, count: int, connections: int = 8, timeout: float = 300.0, template: str | None = None) -> LoadResult:
    """Post ``count`` batches of fresh events (or fewer, if ``timeout`` runs out first), from ``template``
    (``payload.batch_template``'s form) if given."""
    return _python(url, connections, timeout, max_requests=count, template=template)


def _wrk(url: str, connections: int, seconds: float) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bench-batch-") as template:
        template.write(batch_template())
        template.flush()
        argv = [
            "wrk", "--threads", str(min(WRK_THREADS, connections)), "--connections", str(connections),
            "--duration", f"{max(1, round(seconds))}s", "--timeout", f"{REQUEST_TIMEOUT_SECONDS}s",
            "--script", str(LUA_SCRIPT), url,
            "--", template.name, new_nonce(), str(EVENTS_PER_BATCH), *(f"{name}: {value}" for name, value in HEADERS.items()),
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    figures = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
    errors = sum(figures[kind] for kind in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        generator="wrk",
        connections=connections,
        seconds=figures["duration_us"] / 1e6,
        requests=figures["requests"] + figures["connect"] + figures["timeout"],
        errors=errors,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
    )


def _python(url: str, connections: int, seconds: float, max_requests: int | None, template: str | None = None) -> LoadResult:
    parts = urlsplit(url)
    template, nonce = template or batch_template(), new_nonce()
    deadline = time.monotonic() + seconds
    tickets = itertools.count()  # next() is atomic under the GIL: one ticket per request
    limit = max_requests if max_requests is not None else float("inf")
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections

    def client(number: int) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=REQUEST_TIMEOUT_SECONDS)
        for counter in itertools.count(1):
            if time.monotonic() >= deadline or next(tickets) >= limit:
                break
            body = (template % event_ids(nonce, number + 1, counter)).encode()
            started = time.perf_counter()
            try:
                connection.request("POST", parts.path or "/", body, HEADERS)
                answer = connection.getresponse()
                answer.read()
                failed = not 200 <= answer.status < 300
            except (OSError, http.client.HTTPException):
                connection.close()  # reconnects on the next request
                failed = True
            latencies[number].append(time.perf_counter() - started)
            errors[number] += failed
        connection.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + REQUEST_TIMEOUT_SECONDS + 5)
    elapsed = time.perf_counter() - started
    every = [latency for per_client in latencies for latency in per_client]
    return LoadResult(
        generator="python",
        connections=connections,
        seconds=elapsed,
        requests=len(every),
        errors=sum(errors),
        p50_ms=percentile(every, 50) * 1000,
        p99_ms=percentile(every, 99) * 1000,
    )
