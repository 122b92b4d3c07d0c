"""Ingest: ``POST /collect`` with a 10-event batch, against the floor under the same gunicorn.

The baseline is the floor (``floor.py``): a Flask app that parses the body
as JSON and appends it to one Redis list with one ``RPUSH``, the cheapest
durable collector. All apps run side by side under gunicorn with the same
settings (sync workers, the same ``--workers``, keep-alive 5 s: what
``collector serve`` uses), and the same load generator posts the same kind
of body to each: the collector's ``/collect`` (validation, mapping, the
rate limiter, one Lua script in Redis, metrics, the visitor cookie) and the
floor's. A hello-world app (``hello.py``: reads the body, answers a
constant) runs once per connection count, for context only.

At 8 and then 32 connections: hello world once, then rounds that alternate
floor, /collect, floor, /collect, ... so that a noisy neighbour hurts both
alike. The figures are the rounds taken together (requests over seconds;
latencies averaged); each round's own /collect / floor ratio is printed
too, and its range goes into the summary row. Every request carries fresh
event ids, so the collector deduplicates nothing; the outboxes are counted
after each run to prove it, then emptied (no worker runs during ingest).

Targets: /collect requests/s >= 0.5 of the floor's; p99 <= 3x the floor's p99.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis

from collector.storage.outbox import outbox_key
from tests.bench import outbox
from tests.bench.floor import FLOOR_LIST
from tests.bench.footprint import GUNICORN_ROLES, print_rss
from tests.bench.loadgen import LoadResult, generator_name, timed_load
from tests.bench.payload import EVENTS_PER_BATCH
from tests.bench.report import Row, heading, ratio, table
from tests.bench.site import SITE, write_config
from tests.bench.stack import (
    SERVE_KEEPALIVE_SECONDS,
    SERVE_WORKER_CLASS,
    Stack,
    serve_workers,
)
from tests.bench.standin import start_standins

CONNECTIONS = (8, 32)
TARGET_RPS_SHARE = 0.50  # of the floor's
TARGET_P99_FACTOR = 3.0  # the floor's p99
HELLO = "hello-world"
FLOOR = "floor"
OURS = "/collect"
APPS = (HELLO, FLOOR, OURS)
ROUND_APPS = (FLOOR, OURS)  # alternated each round; hello world runs once per connection count, for context
SETTLE_SECONDS = 0.5  # for the requests in flight when the generator stopped


@dataclass(frozen=True)
class Plan:
    seconds: float  # per run
    rounds: int  # runs per app and connection count
    warmup_seconds: float


FULL = Plan(seconds=6, rounds=4, warmup_seconds=2)
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
    heading("1. Ingest: POST /collect vs the floor (JSON parse + one RPUSH), same gunicorn settings")
    print(f"gunicorn: {workers} {SERVE_WORKER_CLASS} workers each (collector serve's default), "
          f"keep-alive {SERVE_KEEPALIVE_SECONDS} s")  # fmt: skip
    print(f"load generator: {generator_name()}")
    print(f"body: {EVENTS_PER_BATCH} events per request, fresh ids; "
          f"{plan.rounds} x {plan.seconds:g} s per app and connection count, alternating floor, /collect, ...; "
          f"hello world {plan.seconds:g} s once per connection count, for context")  # fmt: skip
    with Stack("ingest") as stack:
        redis_server = stack.redis()
        redis = Redis.from_url(redis_server.url)
        standins = start_standins(stack)
        config = write_config(stack.dir / "collector.toml", standins.depict_url, standins.commerce_url)
        collector, collector_url = stack.collector(config, redis_server.url, workers)
        hello, hello_url = stack.gunicorn("hello", "tests.bench.hello:app", workers)
        _, floor_url = stack.gunicorn("floor", "tests.bench.floor:app", workers, REDIS_URL=redis_server.url)
        urls = {HELLO: hello_url + "/collect", FLOOR: floor_url + "/collect", OURS: collector_url + "/collect"}
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
    """Hello world once, then alternate floor and /collect at each connection count; print each run, then the
    runs combined."""
    runs: dict[tuple[str, int], list[LoadResult]] = {}
    detail = []
    for connections in CONNECTIONS:
        schedule = [(HELLO, 1)] + [(app, number) for number in range(1, plan.rounds + 1) for app in ROUND_APPS]
        for app, round_number in schedule:
            result = timed_load(urls[app], connections, plan.seconds)
            runs.setdefault((app, connections), []).append(result)
            queued = _queued_note(redis, result) if app == OURS else _floor_emptied(redis, app)
            share = ""
            if app == OURS:
                share = f"{ratio(result.rps, runs[(FLOOR, connections)][-1].rps):.2f}"
            detail.append([app, connections, round_number, f"{result.rps:.0f}", f"{result.p50_ms:.1f}",
                           f"{result.p99_ms:.1f}", result.errors, share, queued])  # fmt: skip
    print("\neach run (/collect / floor: this round's /collect against the floor run just before it):")
    print(table(["app", "conns", "round", "req/s", "p50 ms", "p99 ms", "errors", "/collect / floor",
                 "queued (outbox after the run)"], detail))  # fmt: skip
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
    """Where the floor sits between hello world and /collect, at each connection count (hello world: context)."""
    print("\nfor context, against hello world (one run of it per connection count):")
    rows = []
    for connections in CONNECTIONS:
        hello, floor, ours = (combined[(app, connections)].rps for app in APPS)
        rows.append([connections, f"{ratio(floor, hello):.2f}", f"{ratio(ours, hello):.2f}", f"{ratio(ours, floor):.2f}"])
    print(table(["conns", "floor / hello", "/collect / hello", "/collect / floor"], rows))


def _queued_note(redis: Redis, result: LoadResult) -> str:
    time.sleep(SETTLE_SECONDS)
    depict, commerce = queued_and_emptied(redis)
    return f"Depict {depict}, Commerce {commerce} events ({result.ok * EVENTS_PER_BATCH} answered + those in flight at the end)"


def round_ratios(combined: dict[tuple[str, int], Combined], connections: int) -> list[float]:
    """Each round's /collect req/s over the floor's run just before it."""
    floor, ours = combined[(FLOOR, connections)].runs, combined[(OURS, connections)].runs
    return [ratio(mine.rps, base.rps) for base, mine in zip(floor, ours)]


def _rows(combined: dict[tuple[str, int], Combined]) -> list[Row]:
    rows = []
    for connections in CONNECTIONS:
        base, ours = combined[(FLOOR, connections)], combined[(OURS, connections)]
        hello = combined[(HELLO, connections)]
        rps_ratio, p99_ratio = ratio(ours.rps, base.rps), ratio(ours.p99_ms, base.p99_ms)
        shares = round_ratios(combined, connections)
        rounds = f"{len(shares)} rounds {min(shares):.2f}-{max(shares):.2f}" if len(shares) > 1 else "1 round"
        rows.append(Row("ingest", f"req/s @{connections} conns, {rounds} (hello world {hello.rps:.0f})",
                        f"{base.rps:.0f} (floor)", f"{ours.rps:.0f}", rps_ratio,
                        f">= {TARGET_RPS_SHARE:.2f}x floor", rps_ratio >= TARGET_RPS_SHARE and ours.errors == 0))  # fmt: skip
        rows.append(Row("ingest", f"p99 @{connections} conns", f"{base.p99_ms:.1f} ms (floor)", f"{ours.p99_ms:.1f} ms",
                        p99_ratio, f"<= {TARGET_P99_FACTOR:g}x floor", p99_ratio <= TARGET_P99_FACTOR))  # fmt: skip
    return rows
