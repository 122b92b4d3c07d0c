"""Ingest: ``POST /collect`` with a 10-event batch, against a hello-world Flask app under the same gunicorn.

Both apps run side by side under gunicorn with the same settings (sync
workers, the same ``--workers``, keep-alive 5 s: what ``collector serve``
uses), and the same load generator posts the same kind of body to both:
the collector's ``/collect`` (validation, mapping, the rate limiter, one Lua
script in Redis, metrics, the visitor cookie) and the hello-world's, which
only reads the body. A third app, the floor (``floor.py``: JSON parse and
one ``RPUSH``), shows what share of hello world any durable collector keeps
on this server. Runs alternate between the apps (hello, floor, collector,
hello, ...) at 8 and then 32 connections so that a noisy neighbour hurts
all alike. Every request carries fresh event ids, so the
collector deduplicates nothing; the outboxes are counted after each run to
prove it, then emptied (no worker runs during ingest).

Targets: /collect requests/s >= 60% of the hello-world's; p99 <= 3x its p99.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis

from collector.queue import outbox_key
from tests.bench import outbox
from tests.bench.floor import FLOOR_LIST
from tests.bench.footprint import GUNICORN_ROLES, print_rss
from tests.bench.loadgen import LoadResult, generator_name, timed_load
from tests.bench.payload import EVENTS_PER_BATCH
from tests.bench.report import Row, heading, ratio, table
from tests.bench.site import SITE, write_config
from tests.bench.stack import SERVE_KEEPALIVE_SECONDS, SERVE_WORKER_CLASS, Stack, serve_workers
from tests.bench.standin import start_standins

CONNECTIONS = (8, 32)
TARGET_RPS_SHARE = 0.60
TARGET_P99_FACTOR = 3.0
FLOOR = "JSON + RPUSH"
APPS = ("hello-world", FLOOR, "/collect")
SETTLE_SECONDS = 0.5  # for the requests in flight when the generator stopped


@dataclass(frozen=True)
class Plan:
    seconds: float  # per run
    rounds: int  # runs per app and connection count
    warmup_seconds: float


FULL = Plan(seconds=10, rounds=2, warmup_seconds=2)
QUICK = Plan(seconds=3, rounds=1, warmup_seconds=1)


@dataclass(frozen=True)
class Combined:
    """The runs of one app at one connection count, taken together."""

    runs: Sequence[LoadResult]

    @property
    def rps(self) -> float:
        return sum(run.ok for run in self.runs) / sum(run.seconds for run in self.runs)

    @property
    def p50_ms(self) -> float:
        return sum(run.p50_ms for run in self.runs) / len(self.runs)

    @property
    def p99_ms(self) -> float:
        return sum(run.p99_ms for run in self.runs) / len(self.runs)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)


def queued_and_emptied(redis: Redis) -> tuple[int, int]:
    """Events waiting in the Depict and the Commerce outbox; empties both so that memory stays bounded."""
    counts = tuple(outbox.events_in(outbox.read(redis, destination)) for destination in ("depict", "commerce"))
    redis.delete(outbox_key(SITE, "depict"), outbox_key(SITE, "commerce"))
    return counts


def run(quick: bool = False) -> list[Row]:
    plan = QUICK if quick else FULL
    workers = serve_workers()
    heading("1. Ingest: POST /collect vs a hello-world Flask app, same gunicorn settings")
    print(f"gunicorn: {workers} {SERVE_WORKER_CLASS} workers each (collector serve's default), "
          f"keep-alive {SERVE_KEEPALIVE_SECONDS} s")  # fmt: skip
    print(f"load generator: {generator_name()}")
    print(f"body: {EVENTS_PER_BATCH} events per request, fresh ids; "
          f"{plan.rounds} x {plan.seconds:g} s per app and connection count, alternating")  # fmt: skip
    with Stack("ingest") as stack:
        redis_server = stack.redis()
        redis = Redis.from_url(redis_server.url)
        standins = start_standins(stack)
        config = write_config(stack.dir / "collector.toml", standins.depict_url, standins.commerce_url)
        collector, collector_url = stack.collector(config, redis_server.url, workers)
        hello, hello_url = stack.gunicorn("hello", "tests.bench.hello:app", workers)
        _, floor_url = stack.gunicorn("floor", "tests.bench.floor:app", workers, REDIS_URL=redis_server.url)
        urls = {"hello-world": hello_url + "/collect", FLOOR: floor_url + "/collect", "/collect": collector_url + "/collect"}
        for url in urls.values():
            timed_load(url, CONNECTIONS[0], plan.warmup_seconds)
        queued_and_emptied(redis)
        redis.delete(FLOOR_LIST)
        combined = measure(urls, plan, redis)
        print_floor(combined)
        print("\nRSS after the load:")
        print_rss({"collector serve (gunicorn)": collector, "hello-world (gunicorn)": hello})
        print(GUNICORN_ROLES)
    return _rows(combined)


def measure(urls: dict[str, str], plan: Plan, redis: Redis) -> dict[tuple[str, int], Combined]:
    """Alternate the apps' runs at each connection count; print each run, then the runs combined."""
    runs: dict[tuple[str, int], list[LoadResult]] = {}
    detail = []
    for connections in CONNECTIONS:
        for round_number in range(1, plan.rounds + 1):
            for app in APPS:
                result = timed_load(urls[app], connections, plan.seconds)
                runs.setdefault((app, connections), []).append(result)
                queued = _queued_note(redis, result) if app == "/collect" else _floor_emptied(redis, app)
                detail.append([app, connections, round_number, f"{result.rps:.0f}", f"{result.p50_ms:.1f}",
                               f"{result.p99_ms:.1f}", result.errors, queued])  # fmt: skip
    print("\neach run:")
    print(table(["app", "conns", "round", "req/s", "p50 ms", "p99 ms", "errors", "queued (outbox after the run)"], detail))
    combined = {key: Combined(value) for key, value in runs.items()}
    if plan.rounds > 1:
        print("\nthe rounds combined (req/s over all runs, latencies averaged):")
        print(table(["app", "conns", "req/s", "p50 ms", "p99 ms", "errors"],
                    [[app, conns, f"{c.rps:.0f}", f"{c.p50_ms:.1f}", f"{c.p99_ms:.1f}", c.errors]
                     for (app, conns), c in combined.items()]))  # fmt: skip
    return combined


def _floor_emptied(redis: Redis, app: str) -> str:
    """For the floor's runs: how many bodies it queued (then emptied, so that memory stays bounded)."""
    if app != FLOOR:
        return ""
    time.sleep(SETTLE_SECONDS)
    with redis.pipeline(transaction=True) as pipe:
        pipe.llen(FLOOR_LIST)
        pipe.delete(FLOOR_LIST)
        queued, _ = pipe.execute()
    return f"floor list: {queued} bodies"


def print_floor(combined: dict[tuple[str, int], Combined]) -> None:
    """Where the floor sits between hello world and /collect, at each connection count."""
    print("\nthe floor (JSON + one RPUSH) against hello world, and /collect against the floor:")
    rows = []
    for connections in CONNECTIONS:
        hello, floor, ours = (combined[(app, connections)].rps for app in APPS)
        rows.append([connections, f"{ratio(floor, hello):.2f}", f"{ratio(ours, hello):.2f}", f"{ratio(ours, floor):.2f}"])
    print(table(["conns", "floor / hello", "/collect / hello", "/collect / floor"], rows))


def _queued_note(redis: Redis, result: LoadResult) -> str:
    time.sleep(SETTLE_SECONDS)
    depict, commerce = queued_and_emptied(redis)
    return f"Depict {depict}, Commerce {commerce} events ({result.ok * EVENTS_PER_BATCH} answered + those in flight at the end)"


def _rows(combined: dict[tuple[str, int], Combined]) -> list[Row]:
    rows = []
    for connections in CONNECTIONS:
        base, ours = combined[("hello-world", connections)], combined[("/collect", connections)]
        rps_ratio, p99_ratio = ratio(ours.rps, base.rps), ratio(ours.p99_ms, base.p99_ms)
        rows.append(Row("ingest", f"req/s @{connections} conns", f"{base.rps:.0f}", f"{ours.rps:.0f}", rps_ratio,
                        f">= {TARGET_RPS_SHARE:.2f}x", rps_ratio >= TARGET_RPS_SHARE and ours.errors == 0))  # fmt: skip
        rows.append(Row("ingest", f"p99 @{connections} conns", f"{base.p99_ms:.1f} ms", f"{ours.p99_ms:.1f} ms",
                        p99_ratio, f"<= {TARGET_P99_FACTOR:g}x", p99_ratio <= TARGET_P99_FACTOR))  # fmt: skip
    return rows
