"""Cost: CPU seconds per million events end to end, the collector against the floor, in the same run.

Ours: ``collector serve`` (gunicorn, its default workers), ``collector
worker`` and one ``redis-server`` take N events (10-event batches with fresh
ids, posted by the bench's Python generator at 8 connections) and deliver
every one to both vendor stand-ins, the worker running all along. CPU is
user + system seconds from ``/proc/<pid>/stat`` (psutil ``cpu_times()``),
for every process of each tree (gunicorn's master and workers; the worker's
supervisor, delivery processes, RQ scheduler processes and multiprocessing
helper), each with its ended children's time (``children_user +
children_system``), from the first request until every event was received
by both vendors and no job was left.

The floor, in the same run: the floor app (``floor.py``: JSON parse + one
``RPUSH``, same gunicorn settings) takes the same N events, and a bare
pooled ``httpx.Client`` (``delivery.py``'s baseline: one process per
destination, the worker's concurrency) posts the very deliveries the
worker would send for N events (built from N events queued through
``/collect`` beforehand, with no worker running; those are then dropped),
with the Redis CPU of the floor's ingest and sending. The bare client's
CPU is its sending only (``time.process_time`` around the sends).

Not counted on either side: the vendor stand-ins and the load generator
(printed for context). No target: the row shows the ratio, ours / floor.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil
from redis import Redis

from collector.config.defaults import DESTINATIONS
from collector.config.loading import load_config
from tests.bench import delivery
from tests.bench.footprint import jobs_waiting_or_running, outboxes_empty, settle
from tests.bench.loadgen import send_batches
from tests.bench.payload import EVENTS_PER_BATCH
from tests.bench.report import Row, heading, ratio, table
from tests.bench.site import write_config
from tests.bench.stack import Service, Stack, serve_workers, wait_until
from tests.bench.standin import NOTE, start_standins

WARMUP_BATCHES = 50
TIMEOUT_SECONDS = 240
MILLION = 1_000_000


@dataclass(frozen=True)
class Plan:
    events: int


FULL = Plan(events=20_000)
QUICK = Plan(events=2_000)


def _own_and_children(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


class TreeCpu:
    """CPU seconds of process trees since :meth:`begin`: every process found in them then or at the end, each with
    its ended (and waited-for) children."""

    def __init__(self, roots: Iterable[psutil.Process]):
        self._roots = list(roots)
        self._start = self._read()

    def _read(self) -> dict[int, tuple[psutil.Process, float]]:
        found: dict[int, tuple[psutil.Process, float]] = {}
        for root in self._roots:
            try:
                for process in [root, *root.children(recursive=True)]:
                    found[process.pid] = (process, _own_and_children(process))
            except psutil.NoSuchProcess:
                continue
        return found

    def seconds(self) -> float:
        now = self._read()
        return sum(cpu - self._start.get(pid, (None, 0.0))[1] for pid, (_, cpu) in now.items())


def roots(service: Service) -> list[psutil.Process]:
    return [psutil.Process(service.pid)]


def run(quick: bool = False) -> list[Row]:
    plan = QUICK if quick else FULL
    heading("Cost: CPU seconds per million events end to end, the collector against the floor")
    print(f"{NOTE}. Every event is delivered to both vendors.")
    with Stack("cost") as stack:
        redis_server = stack.redis()
        redis = Redis.from_url(redis_server.url)
        redis_process = psutil.Process(redis_server.pid)
        standins = start_standins(stack)
        config = write_config(stack.dir / "collector.toml", standins.depict_url, standins.commerce_url)
        policy = load_config(config).settings.delivery
        workers = serve_workers()
        collector, collector_url = stack.collector(config, redis_server.url, workers)
        floor, floor_url = stack.gunicorn("floor", "tests.bench.floor:app", workers, REDIS_URL=redis_server.url)

        # what the bare client will send: the deliveries of N events, queued with no worker running, then dropped
        send_batches(collector_url + "/collect", plan.events // EVENTS_PER_BATCH)
        held = delivery.hold_outboxes(redis)
        events = len(held["commerce"])
        requests = delivery.bare_requests(config, redis, held)
        for key in redis.scan_iter(match=delivery.HELD_PREFIX + "*"):
            redis.delete(key)
        print(f"N = {events} events ({events // EVENTS_PER_BATCH} requests of {EVENTS_PER_BATCH}); the bare client's "
              f"share: {len(held['depict'])} Depict arrays + {len(held['commerce'])} Commerce Web Events")  # fmt: skip

        worker = stack.worker(config, redis_server.url)
        send_batches(collector_url + "/collect", WARMUP_BATCHES)  # warm: connections, scripts, the worker's pools
        send_batches(floor_url + "/collect", WARMUP_BATCHES)
        settle(redis, lambda: outboxes_empty(redis) and not jobs_waiting_or_running(redis), "the warm-up delivered")

        # ours: ingest and delivery at once, until every event arrived at both vendors and no job is left
        meters = {"gunicorn (collector serve)": TreeCpu(roots(collector)), "collector worker": TreeCpu(roots(worker)),
                  "redis-server": TreeCpu([redis_process]), "stand-ins": TreeCpu(roots(standins.service))}  # fmt: skip
        standins.receipts.reset()
        started = time.monotonic()
        sent = send_batches(collector_url + "/collect", events // EVENTS_PER_BATCH)
        ingest_seconds = time.monotonic() - started
        wait_until(lambda: min(standins.receipts.count(vendor) for vendor in DESTINATIONS) >= events, TIMEOUT_SECONDS,
                   f"both vendors receiving {events} events")  # fmt: skip
        settle(redis, lambda: outboxes_empty(redis) and not jobs_waiting_or_running(redis), "the worker idle")
        ours = {name: meter.seconds() for name, meter in meters.items()}
        ours_seconds = time.monotonic() - started
        print(f"ours: {sent.ok} requests accepted in {ingest_seconds:.1f} s, everything delivered and settled "
              f"{ours_seconds:.1f} s after the first request")  # fmt: skip

        # the floor: floor ingest of N events, then the bare client's deliveries of N events
        meters = {"gunicorn (floor app)": TreeCpu(roots(floor)), "redis-server": TreeCpu([redis_process]),
                  "stand-ins": TreeCpu(roots(standins.service))}  # fmt: skip
        started = time.monotonic()
        floor_sent = send_batches(floor_url + "/collect", events // EVENTS_PER_BATCH)
        floor_ingest_seconds = time.monotonic() - started
        course = delivery.Course(standins.receipts, delivery.Plan(events, TIMEOUT_SECONDS), {})
        standins.receipts.reset()
        bare = delivery.run_baseline(requests, policy, course)
        floor_cpu = {name: meter.seconds() for name, meter in meters.items()}
        floor_cpu["bare aiohttp (sending)"] = bare.cpu["senders"]
        print(f"floor: {floor_sent.ok} requests in {floor_ingest_seconds:.1f} s; the bare client delivered "
              f"{bare.events} events in {bare.seconds:.1f} s")  # fmt: skip
        redis.delete("bench:floor")

    counted_ours = {name: value for name, value in ours.items() if name != "stand-ins"}
    counted_floor = {name: value for name, value in floor_cpu.items() if name != "stand-ins"}
    per_million = MILLION / events
    rows = [[name, f"{value:.2f}", f"{value * per_million:,.0f}"] for name, value in counted_ours.items()]
    total_ours = sum(counted_ours.values())
    rows.append(["= ours", f"{total_ours:.2f}", f"{total_ours * per_million:,.0f}"])
    rows += [[name, f"{value:.2f}", f"{value * per_million:,.0f}"] for name, value in counted_floor.items()]
    total_floor = sum(counted_floor.values())
    rows.append(["= floor", f"{total_floor:.2f}", f"{total_floor * per_million:,.0f}"])
    rows.append(["(stand-ins, not counted: ours / floor)", f"{ours['stand-ins']:.2f} / {floor_cpu['stand-ins']:.2f}", ""])
    print(table(["processes", f"CPU s for {events} events", "CPU s per million events"], rows))
    print("ratio ours / floor by part: ingest "
          f"{ratio(ours['gunicorn (collector serve)'], floor_cpu['gunicorn (floor app)']):.2f}x (gunicorn), "
          f"delivery {ratio(ours['collector worker'], floor_cpu['bare aiohttp (sending)']):.2f}x "
          f"(worker vs bare client), Redis {ratio(ours['redis-server'], floor_cpu['redis-server']):.2f}x")  # fmt: skip
    return [
        Row("cost", "CPU s per million events end to end (gunicorn + worker + redis-server)",
            f"{total_floor * per_million:,.0f} s (floor + bare client)", f"{total_ours * per_million:,.0f} s",
            ratio(total_ours, total_floor), "none: figure", None),
    ]  # fmt: skip
