"""Delivery: ``collector worker`` vs a bare aiohttp client, posting the same requests to the same fast stand-ins.

N events are queued through ``POST /collect`` (10-event batches) with no
worker running, which leaves N/10 Depict arrays and N Commerce Web Events in
the outboxes. The outboxes are then set aside (renamed, kept for every
round) and the same deliveries are sent in alternated rounds, bare, ours,
bare, ours, ... (5 of each):

- baseline: the very same deliveries (bodies, URLs and headers of the
  worker's vendor clients) posted by a bare aiohttp client (uvloop) with
  as many requests in flight as the worker's ``concurrency``, one process
  per destination as the worker has, started afresh each round (until
  December 2026 the worker sent from threads, and the baseline was a bare
  pooled ``httpx.Client`` from as many threads);
- ours: ``collector worker``, started once before the first round and
  waited for until its delivery processes are registered with RQ (idle
  during the bare rounds); each round a copy of the set-aside entries is
  put in the outboxes and the dispatcher woken: outbox -> RQ jobs of
  ``deliveries_per_job`` -> the ledger, the breaker, the concurrent sends.
  RQ job ids are new each round, so the ledger skips nothing.

Each side is timed from its start signal until the stand-ins have received
every event id at both vendors. The stand-ins are the bench's fast ones
(``standin.py``), which do not validate; the test suite's spec-checking
stand-ins would cap both sides. Delivery settings are the production
defaults, printed with the figures.

Target: the median over the rounds of (the worker's events/s / the bare
client's events/s in the bare round just before it) >= 0.85.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from redis import Redis

from collector.config.defaults import DESTINATIONS
from collector.config.loading import load_config
from collector.config.schema import DeliveryPolicy
from collector.storage.outbox import WAKE_LIST, outbox_key
from tests.bench import bare_aiohttp, outbox, vendor_speed
from tests.bench.loadgen import send_batches
from tests.bench.payload import EVENTS_PER_BATCH
from tests.bench.report import Row, heading, ratio, table
from tests.bench.site import SITE, write_config
from tests.bench.stack import (
    STARTUP_SECONDS,
    Service,
    Stack,
    cpu_seconds,
    serve_workers,
    wait_until,
)
from tests.bench.standin import NOTE, Receipts, start_standins
from tests.bench.vendor_speed import USER_AGENT, worker_vendor_clients
from worker.dead_letters import DeadLetters

TARGET_SHARE = 0.85
HELD_PREFIX = "bench:held:"


@dataclass(frozen=True)
class Plan:
    events: int  # per round
    timeout_seconds: float  # for each side to deliver everything, each round
    rounds: int = 5  # of each side, alternated


FULL = Plan(events=6_000, timeout_seconds=120)
QUICK = Plan(events=800, timeout_seconds=60, rounds=3)


@dataclass(frozen=True)
class Outcome:
    seconds: float
    events: int  # delivered to both vendors
    requests: int
    cpu: dict[str, float]  # CPU seconds used meanwhile by the senders, the stand-ins, redis

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


Processes = dict[str, list[psutil.Process]]


def cpu_of(groups: Processes) -> dict[str, float]:
    return {name: cpu_seconds(processes) for name, processes in groups.items()}


def _minus(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after}


# outboxes set aside


def hold_outboxes(redis: Redis) -> dict[str, list[dict[str, Any]]]:
    """Rename the outboxes out of the dispatcher's sight; return their deliveries per destination."""
    held = {}
    for destination in DESTINATIONS:
        key = outbox_key(SITE, destination)
        redis.rename(key, HELD_PREFIX + key)
        held[destination] = outbox.read(redis, destination, HELD_PREFIX + key)
    return held


def copy_held_outboxes(redis: Redis) -> None:
    """Put a copy of the set-aside outboxes back (they stay set aside, for the next round) and wake the dispatcher."""
    entries = {destination: redis.lrange(HELD_PREFIX + outbox_key(SITE, destination), 0, -1) for destination in DESTINATIONS}
    with redis.pipeline(transaction=True) as pipe:
        for destination, held in entries.items():
            if held:
                pipe.rpush(outbox_key(SITE, destination), *held)
        pipe.lpush(WAKE_LIST, "1")
        pipe.execute()


def release_outboxes(redis: Redis) -> None:
    """Put the outboxes back and wake the dispatcher, in one transaction."""
    with redis.pipeline(transaction=True) as pipe:
        for destination in DESTINATIONS:
            key = outbox_key(SITE, destination)
            pipe.rename(HELD_PREFIX + key, key)
        pipe.lpush(WAKE_LIST, "1")
        pipe.execute()


@dataclass(frozen=True)
class Course:
    """What both senders are measured by: the stand-ins' receipts, the goal, the processes whose CPU is shown too."""

    receipts: Receipts
    plan: Plan
    others: Processes

    def wait_delivered(self, started: float) -> tuple[float, int]:
        """Seconds from ``started`` to the last arrival once both vendors have every event (or the timeout)."""
        def delivered() -> int:
            return min(self.receipts.count(vendor) for vendor in DESTINATIONS)

        try:
            wait_until(lambda: delivered() >= self.plan.events, self.plan.timeout_seconds, "delivery")
        except TimeoutError:
            print(f"  ! not everything arrived within {self.plan.timeout_seconds:g} s; the rate counts what did")
        return max(self.receipts.last_arrival() - started, 0.0), delivered()


# the baseline: a bare aiohttp client


@dataclass(frozen=True)
class Request:
    url: str
    body: Any
    headers: dict[str, str]


def bare_requests(config_path: Path, redis: Redis, held: dict[str, list[dict[str, Any]]]) -> dict[str, list[Request]]:
    """The requests the worker would send, built by its own vendor clients (``worker.runtime.vendor_clients``,
    the one worker function the bench relies on): their URLs and headers, the worker's User-Agent, the
    deliveries' bodies. ``redis`` is unused (kept for the stages that call this)."""
    clients = worker_vendor_clients(config_path)
    defaults = {"User-Agent": USER_AGENT}
    return {
        destination: [_request(clients[(SITE, destination)], delivery, defaults) for delivery in deliveries]
        for destination, deliveries in held.items()
    }


def _request(client: Any, delivery: dict[str, Any], defaults: dict[str, str]) -> Request:
    return Request(client.url, delivery["body"], {**defaults, **client.headers_for(delivery)})


async def _post_each_once(requests: list[Request], in_flight: int) -> None:
    """Every request once, ``in_flight`` at a time, over one keep-alive session."""
    pending = iter(requests)
    connector = aiohttp.TCPConnector(limit=in_flight, keepalive_timeout=75)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def lane() -> None:
            for request in pending:
                data = json.dumps(request.body, separators=(",", ":"), ensure_ascii=False).encode()
                async with session.post(request.url, data=data, headers=request.headers) as answer:
                    await answer.read()
                    answer.raise_for_status()

        await asyncio.gather(*(lane() for _ in range(in_flight)))


def post_all(requests: list[Request], policy: DeliveryPolicy, ready: Any, cpu: Any) -> None:
    """In a child process: a bare aiohttp client (uvloop where installed) with ``policy.concurrency`` requests
    in flight, as many as the worker may have. Puts the CPU seconds it used while sending on ``cpu``."""
    bare_aiohttp.install_uvloop()
    ready.wait()
    started = time.process_time()
    asyncio.run(_post_each_once(requests, policy.concurrency))
    cpu.put(time.process_time() - started)


def run_baseline(requests: dict[str, list[Request]], policy: DeliveryPolicy, course: Course) -> Outcome:
    context = multiprocessing.get_context("spawn")
    ready, cpu = context.Barrier(len(requests) + 1), context.Queue()
    children = [context.Process(target=post_all, args=(r, policy, ready, cpu), name=f"bare-{d}") for d, r in requests.items()]
    for child in children:
        child.start()
    try:
        ready.wait(timeout=STARTUP_SECONDS)
        started, before = time.time(), cpu_of(course.others)
        seconds, delivered = course.wait_delivered(started)
        used = {"senders": sum(cpu.get(timeout=30) for _ in children), **_minus(cpu_of(course.others), before)}
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
                child.join(timeout=5)
    return Outcome(seconds, delivered, sum(len(r) for r in requests.values()), used)


# ours: collector worker


def run_worker(worker: Service, redis: Redis, requests: int, course: Course) -> Outcome:
    """One round of the running worker: a copy of the set-aside outboxes put back, timed until all arrived."""
    groups = {"senders": worker.processes(), **course.others}
    started, before = time.time(), cpu_of(groups)
    copy_held_outboxes(redis)
    seconds, delivered = course.wait_delivered(started)
    return Outcome(seconds, delivered, requests, _minus(cpu_of(groups), before))


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def run(quick: bool = False) -> list[Row]:
    plan = QUICK if quick else FULL
    heading("2. Delivery: collector worker vs a bare aiohttp client, same requests, same stand-ins")
    print(NOTE)
    with Stack("delivery") as stack:
        redis_server = stack.redis()
        redis = Redis.from_url(redis_server.url)
        standins = start_standins(stack)
        config = write_config(stack.dir / "collector.toml", standins.depict_url, standins.commerce_url)
        policy = load_config(config).settings.delivery
        print(f"delivery settings (production defaults): deliveries_per_job = {policy.deliveries_per_job}, "
              f"concurrency = {policy.concurrency} per delivery process, one process per destination")  # fmt: skip
        collector, collector_url = stack.collector(config, redis_server.url, serve_workers())
        filled = send_batches(collector_url + "/collect", plan.events // EVENTS_PER_BATCH)
        collector.stop()
        held = hold_outboxes(redis)
        events = len(held["commerce"])
        print(f"queued: {events} events in {filled.seconds:.1f} s -> {len(held['depict'])} Depict arrays + "
              f"{len(held['commerce'])} Commerce Web Events, sent {plan.rounds} times by each side, "
              f"alternating (bare, worker, bare, ...)")  # fmt: skip
        plan = Plan(events, plan.timeout_seconds, plan.rounds)

        others = {"stand-ins": standins.service.processes(), "redis": [psutil.Process(redis_server.pid)]}
        course = Course(standins.receipts, plan, others)
        requests = bare_requests(config, redis, held)
        worker = stack.worker(config, redis_server.url)

        rounds: list[tuple[Outcome, Outcome]] = []
        duplicates = 0
        for _ in range(plan.rounds):
            standins.receipts.reset()
            baseline = run_baseline(requests, policy, course)
            standins.receipts.reset()
            ours = run_worker(worker, redis, baseline.requests, course)
            duplicates += sum(standins.receipts.duplicates(vendor) for vendor in DESTINATIONS)
            rounds.append((baseline, ours))
        detail = []
        for number, pair in enumerate(rounds, start=1):
            for name, o in zip(("bare aiohttp", "collector worker"), pair):
                detail.append([number, name, o.events, o.requests, f"{o.seconds:.2f}", f"{o.events_per_second:.0f}",
                               f"{o.requests_per_second:.0f}", f"{o.cpu['senders']:.1f}", f"{o.cpu['stand-ins']:.1f}",
                               f"{o.cpu['redis']:.1f}",
                               f"{ratio(o.events_per_second, pair[0].events_per_second):.2f}" if o is pair[1] else ""])  # fmt: skip
        print(table(["round", "sender", "events", "requests", "seconds", "events/s", "requests/s", "CPU s: senders",
                     "stand-ins", "redis", "worker / bare"], detail))  # fmt: skip
        print(f"worker: {duplicates} duplicate arrivals in all rounds, {len(DeadLetters(redis))} dead-lettered. CPU s: "
              f"user + system seconds used during the run (the machine has {os.cpu_count()} cores x the seconds)")  # fmt: skip
    shares = [ratio(ours.events_per_second, base.events_per_second) for base, ours in rounds]
    share = median(shares)
    base_median = median([base.events_per_second for base, _ in rounds])
    ours_median = median([ours.events_per_second for _, ours in rounds])
    complete = all(o.events == plan.events for pair in rounds for o in pair)
    print(f"\nworker / bare, round by round: {', '.join(f'{value:.2f}' for value in shares)}; median {share:.2f}"
          f"{'' if complete else ' (some round did not deliver everything in time)'}")  # fmt: skip
    fast = Row("delivery", f"fast stand-ins: events/s to both vendors, median of {len(shares)} alternated rounds' "
               f"ratios to bare aiohttp: {share:.3f} ({min(shares):.2f}-{max(shares):.2f})", f"{base_median:.0f} (bare client)",
               f"{ours_median:.0f}", share, f">= {TARGET_SHARE:.2f}x", share >= TARGET_SHARE and complete)  # fmt: skip
    return [fast, *at_vendor_speed(quick)]


def at_vendor_speed(quick: bool) -> list[Row]:
    """``vendor_speed.py``'s rows; if it fails, the rows above still count and it shows as failed."""
    try:
        return vendor_speed.run(quick)
    except Exception as error:
        traceback.print_exc()
        print(f"\n! delivery at vendor speed failed: {type(error).__name__}: {error}")
        return [Row("delivery", "at vendor speed: failed (see above)", "—", "—", None, "—", None)]
