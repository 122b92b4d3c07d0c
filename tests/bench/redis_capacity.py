"""Redis: how far one Redis goes. Its CPU per ``/collect`` request, per delivery and per event; a sizing run.

Every figure comes from one embedded ``redis-server`` (AOF on,
``appendfsync everysec``, as in production) that nothing else uses. Redis
CPU is read from ``INFO cpu`` before and after: the whole process
(``used_cpu_user + used_cpu_sys``, as ``/proc/<pid>/stat``) and its main
thread (``..._main_thread``, Redis >= 6.2), which runs every command, the
network I/O and the AOF writes and so is what one core must carry; the
rest are background threads (AOF fsync, lazy frees) on other cores.

1. ingest: ``collector serve`` with its default workers, as the ingest
   stage runs it, under wrk at 32 connections (10-event batches, fresh
   ids), no worker running; Redis CPU divided by the requests Redis queued
   (one Depict outbox entry per request, so those in flight when wrk
   stopped count too); ``INFO commandstats`` per call.
   a. on a fresh Redis, as the ingest stage has it: the dedupe lookups
      find only the current generation of ids;
   b. in the steady state: a few batches are first queued through the
      collector's own ``Outbox.try_enqueue(now=...)`` at every generation
      of the past dedupe window (24 hours by default), so that each lookup
      checks the whole window, as it does in production after a day. The
      collector is restarted for it (its workers remember which
      generations exist).
2. delivery: a fixed number of those requests' outbox entries is set
   aside; ``collector worker`` runs against the fast stand-ins of
   ``standin.py``; after a small warm-up drain, the entries are put back
   and Redis CPU is measured until the worker has recorded every delivery
   as delivered (``collector:stats:deliveries``) and no job runs, divided
   by deliveries (Depict arrays + Commerce Web Events) and by events
   (each delivered to both vendors).
3. one Redis core: 1 s / (ingest + delivery main-thread CPU per event),
   for the fresh and the steady-state ingest.
4. sizing: ``collector serve --workers W`` for W in (2, 4) at 32
   connections in the steady state (short runs), next to the default's
   from 1.; then ``collector worker`` with one supervisor (two delivery
   processes) and with two, each draining as many entries. CPU seconds per
   1,000 events of each kind of process, read from ``/proc`` (psutil), and
   what the rest of the machine used meanwhile (other processes, steal).

The machine has 2 cores: every process of a run shares them with the
others, including wrk and the stand-ins, so rates with more than 2 busy
processes show how processes share 2 cores, not how they would scale on
more. Redis CPU per request or per event depends little on that. It
asserts nothing.
"""

from __future__ import annotations

import inspect
import math
import os
import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from redis import Redis
from rq import Worker

from collector.config.defaults import DESTINATIONS
from collector.config.loading import load_config
from collector.storage.delivery_stats import delivery_counts
from collector.storage.outbox import Outbox, outbox_key
from tests.bench import outbox
from tests.bench.delivery import HELD_PREFIX, release_outboxes
from tests.bench.loadgen import LoadResult, generator_name, timed_load
from tests.bench.payload import EVENTS_PER_BATCH, new_nonce
from tests.bench.report import Row, heading, table
from tests.bench.site import SITE, write_config
from tests.bench.stack import Service, Stack, cpu_seconds, serve_workers, wait_until
from tests.bench.standin import NOTE, StandIns, start_standins

CONNECTIONS = 32
SIZING_WORKERS = (2, 4)
SUPERVISORS = (1, 2)
POOL_PREFIX = "bench:pool:"  # outbox entries queued by the ingest load, kept for the delivery runs
SETTLE_SECONDS = 0.5  # requests in flight when wrk stopped
JOB_DONE_SECONDS = 0.5  # after its last job, a worker goes back to waiting
SEED_BATCHES = 5  # per past generation of the dedupe window
DEFAULT_GENERATION_SECONDS = 3600
TOP_COMMANDS = 12
FRESH, STEADY = "fresh Redis", "full dedupe window"
SIZING = "sizing"  # an ingest run of 4., not printed on its own


@dataclass(frozen=True)
class Plan:
    ingest_seconds: float  # each measured /collect load of 1.
    sizing_seconds: float  # each `collector serve --workers W` run
    warmup_seconds: float
    idle_seconds: float  # Redis CPU with nothing to do, for context
    delivery_requests: int  # /collect requests' worth of outbox entries each worker run drains
    warmup_requests: int  # drained, unmeasured, before each worker run
    timeout_seconds: float  # for a worker run to deliver everything


FULL = Plan(ingest_seconds=10, sizing_seconds=8, warmup_seconds=2, idle_seconds=2, delivery_requests=1_200,
            warmup_requests=60, timeout_seconds=60)  # fmt: skip
QUICK = Plan(ingest_seconds=2, sizing_seconds=2, warmup_seconds=1, idle_seconds=0.5, delivery_requests=200,
             warmup_requests=10, timeout_seconds=20)  # fmt: skip


# reading Redis


@dataclass(frozen=True)
class Snapshot:
    at: float
    cpu: float  # INFO cpu used_cpu_user + used_cpu_sys: the whole process (getrusage, as /proc/<pid>/stat)
    cpu_main: float  # ..._main_thread (Redis >= 6.2); NaN before
    commands: dict[str, tuple[int, int]]  # INFO commandstats: name -> (calls, usec)
    processed: int  # total_commands_processed
    net_in: int
    net_out: int
    forks: int  # total_forks: AOF rewrites (their child's CPU is not the server's)
    reads: int  # total_reads_processed: socket reads (each may carry many commands)
    writes: int  # total_writes_processed
    connections: int  # total_connections_received


def snapshot(redis: Redis) -> Snapshot:
    info = redis.info("everything")
    commands = {
        name.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
        for name, value in info.items()
        if name.startswith("cmdstat_")
    }
    main = info.get("used_cpu_user_main_thread"), info.get("used_cpu_sys_main_thread")
    return Snapshot(
        at=time.monotonic(),
        cpu=float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        cpu_main=math.nan if None in main else float(main[0]) + float(main[1]),  # type: ignore[arg-type]
        commands=commands,
        processed=int(info["total_commands_processed"]),
        net_in=int(info["total_net_input_bytes"]),
        net_out=int(info["total_net_output_bytes"]),
        forks=int(info.get("total_forks", 0)),
        reads=int(info.get("total_reads_processed", 0)),
        writes=int(info.get("total_writes_processed", 0)),
        connections=int(info.get("total_connections_received", 0)),
    )


@dataclass(frozen=True)
class Usage:
    """What Redis did between two snapshots."""

    seconds: float
    cpu: float
    cpu_main: float
    commands: dict[str, tuple[int, int]]
    processed: int
    net_in: int
    net_out: int
    forks: int
    reads: int
    writes: int
    connections: int

    @classmethod
    def between(cls, before: Snapshot, after: Snapshot) -> "Usage":
        commands = {}
        for name, (calls, usec) in after.commands.items():
            calls_before, usec_before = before.commands.get(name, (0, 0))
            if calls > calls_before:
                commands[name] = (calls - calls_before, usec - usec_before)
        return cls(
            seconds=after.at - before.at,
            cpu=after.cpu - before.cpu,
            cpu_main=after.cpu_main - before.cpu_main,
            commands=commands,
            processed=after.processed - before.processed,
            net_in=after.net_in - before.net_in,
            net_out=after.net_out - before.net_out,
            forks=after.forks - before.forks,
            reads=after.reads - before.reads,
            writes=after.writes - before.writes,
            connections=after.connections - before.connections,
        )

    @property
    def core(self) -> float:
        """The CPU that one core must carry: the main thread's (the whole process's before Redis 6.2)."""
        return self.cpu if math.isnan(self.cpu_main) else self.cpu_main


def idle_usage(redis: Redis, seconds: float) -> Usage:
    before = snapshot(redis)
    time.sleep(seconds)
    return Usage.between(before, snapshot(redis))


def us(seconds: float, per: float) -> float:
    return seconds * 1e6 / per if per else math.nan


def print_cpu(usage: Usage, per: Mapping[str, float], idle: Usage | None) -> None:
    """Redis CPU in µs per each unit of ``per`` (request, delivery, event), for the process and its main thread."""
    rows = [[f"per {unit}", f"{us(usage.cpu, count):.1f}", f"{us(usage.cpu_main, count):.1f}"] for unit, count in per.items()]
    print(table(["Redis CPU", "whole process µs", "main thread µs"], rows))
    idle_rate = idle.core / idle.seconds if idle and idle.seconds else math.nan
    share = idle_rate * usage.seconds / usage.core if usage.core else math.nan
    print(f"over {usage.seconds:.1f} s: {usage.cpu:.2f} s of Redis CPU ({usage.cpu_main:.2f} s main thread, "
          f"{usage.core / usage.seconds:.0%} of a core), {usage.processed} commands, "
          f"{usage.net_in / 1e6:.1f} MB in, {usage.net_out / 1e6:.1f} MB out. The same Redis with nothing to do "
          f"(same clients connected): {idle_rate * 1000:.1f} ms/s main thread, {share:.1%} of the figures above "
          f"(counted in them)")  # fmt: skip
    if usage.forks:
        print(f"! Redis forked {usage.forks} time(s) meanwhile (an AOF rewrite): copy-on-write faults add to its CPU")


def print_traffic(usage: Usage, count: int, unit: str) -> None:
    print(f"per {unit}: {usage.processed / count:.2f} commands (top-level, not counting those scripts run), "
          f"{usage.reads / count:.2f} socket reads, {usage.writes / count:.2f} socket writes, "
          f"{usage.net_in / count:.0f} bytes in, {usage.net_out / count:.0f} bytes out; "
          f"{usage.processed / usage.reads if usage.reads else math.nan:.2f} commands per read; "
          f"{usage.connections} new connections in all")  # fmt: skip


def print_commands(usage: Usage, count: int, unit: str) -> None:
    """``INFO commandstats`` over the run: calls and µs per ``unit``, µs per call, costliest first."""
    ordered = sorted(usage.commands.items(), key=lambda item: item[1][1], reverse=True)
    rows = [
        [name, f"{calls / count:.3g}", f"{usec / calls:.1f}", f"{usec / count:.1f}"]
        for name, (calls, usec) in ordered[:TOP_COMMANDS]
    ]
    print(table(["command", f"calls per {unit}", "µs per call", f"µs per {unit}"], rows))
    rest = ordered[TOP_COMMANDS:]
    if rest:
        print(f"(and {len(rest)} more commands: {sum(usec for _, (_, usec) in rest) / count:.1f} µs per {unit} in all)")


COMMANDSTATS_NOTE = (
    "commandstats time is inside the commands only (no parsing, network I/O, AOF writes), and wall-clock: on a busy "
    "machine a descheduled Redis inflates it (the CPU figures are CPU time). A command a Lua script runs has its own "
    "line and its time is inside evalsha's too, so the lines do not add up."
)


# CPU of processes (psutil: /proc/<pid>/stat) and of the machine (/proc/stat)


def children_cpu() -> float:
    """CPU seconds of this process's ended and waited-for children (wrk, once it ran)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_cpu() -> tuple[float, float]:
    """Busy and steal CPU seconds of the whole machine so far."""
    times = psutil.cpu_times()
    busy = times.user + times.nice + times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)
    return busy, getattr(times, "steal", 0.0)


def descendants(service: Service) -> list[psutil.Process]:
    return service.processes()[1:]


@dataclass(frozen=True)
class Meter:
    """CPU seconds used by groups of processes, by wrk, and by the whole machine, from its start."""

    groups: dict[str, list[psutil.Process]]
    start: dict[str, float]

    @classmethod
    def begin(cls, groups: dict[str, list[psutil.Process]]) -> "Meter":
        return cls(groups, cls._read(groups))

    @staticmethod
    def _read(groups: dict[str, list[psutil.Process]]) -> dict[str, float]:
        busy, steal = machine_cpu()
        return {**{kind: cpu_seconds(processes) for kind, processes in groups.items()},
                "wrk": children_cpu(), "machine": busy, "steal": steal}  # fmt: skip

    def end(self) -> dict[str, float]:
        """Seconds used since :meth:`begin` per group, plus ``others`` (the machine's busy time that is not
        ours: other processes, the bench's own Python) and ``steal`` (the hypervisor's)."""
        now = self._read(self.groups)
        used = {kind: now[kind] - self.start[kind] for kind in now}
        ours = sum(value for kind, value in used.items() if kind not in ("machine", "steal"))
        used["others"] = max(used.pop("machine") - ours, 0.0)
        return used


def per_thousand(cpu: float, events: int) -> str:
    return f"{cpu * 1000 / events:.3f}" if events else "—"


# the outboxes: the ingest load's entries kept in a pool, a fixed number put back for each worker run


def entries_queued(redis: Redis) -> int:
    """Requests queued so far: each accepted /collect request adds one entry to the Depict outbox."""
    return redis.llen(outbox_key(SITE, "depict"))


def empty_outboxes(redis: Redis) -> None:
    redis.delete(*(outbox_key(SITE, destination) for destination in DESTINATIONS))


def pool_outboxes(redis: Redis) -> None:
    """Append the outboxes' entries to the pool, out of any dispatcher's sight, and empty them."""
    for destination in DESTINATIONS:
        key = outbox_key(SITE, destination)
        entries = redis.lrange(key, 0, -1)
        with redis.pipeline(transaction=True) as pipe:
            if entries:
                pipe.rpush(POOL_PREFIX + key, *entries)
            pipe.delete(key)
            pipe.execute()


def pooled(redis: Redis) -> int:
    return redis.llen(POOL_PREFIX + outbox_key(SITE, "depict"))


def stage_from_pool(redis: Redis, requests: int) -> tuple[int, int, int]:
    """Take ``requests`` entries per destination off the pool into the held outboxes (``delivery.release_outboxes``
    puts them back); return the Depict deliveries, the Commerce deliveries, and the events they carry."""
    for destination in DESTINATIONS:
        key = outbox_key(SITE, destination)
        entries = redis.lrange(POOL_PREFIX + key, 0, requests - 1)
        with redis.pipeline(transaction=True) as pipe:
            pipe.delete(HELD_PREFIX + key)
            if entries:
                pipe.rpush(HELD_PREFIX + key, *entries)
            pipe.ltrim(POOL_PREFIX + key, len(entries), -1)
            pipe.execute()
    depict = outbox.read(redis, "depict", HELD_PREFIX + outbox_key(SITE, "depict"))
    commerce = outbox.read(redis, "commerce", HELD_PREFIX + outbox_key(SITE, "commerce"))
    return len(depict), len(commerce), outbox.events_in(commerce)


# the dedupe window's steady state


def seed_dedupe_window(redis: Redis, window_seconds: int) -> str | None:
    """Queue ``SEED_BATCHES`` batches (no deliveries) at every generation of the past dedupe window, through the
    collector's own ``Outbox.try_enqueue(now=...)``; returns what it did, or None if this collector cannot."""
    if "now" not in inspect.signature(Outbox.try_enqueue).parameters:
        return None
    try:
        from collector.storage import dedupe

        step = int(getattr(dedupe, "GENERATION_SECONDS", DEFAULT_GENERATION_SECONDS))
    except ImportError:
        step = DEFAULT_GENERATION_SECONDS
    queue, nonce, now = Outbox(redis, window_seconds), new_nonce(), time.time()
    steps = math.ceil(window_seconds / step)
    for back in range(steps, 0, -1):  # oldest first, as time would have written them
        for number in range(SEED_BATCHES):
            ids = [f"{nonce}-seed-{back}-{number}-{j}" for j in range(1, EVENTS_PER_BATCH + 1)]
            queue.try_enqueue(SITE, ids, [], now=now - back * step)
    return (f"{steps} x {SEED_BATCHES} batches of {EVENTS_PER_BATCH} ids queued at every {step} s of the past "
            f"{window_seconds / 3600:g} h dedupe window, through Outbox.try_enqueue(now=...)")  # fmt: skip


# 1. and 4. ingest


@dataclass(frozen=True)
class IngestRun:
    label: str
    workers: int
    load: LoadResult
    requests: int  # queued in Redis: answered + those in flight when wrk stopped
    usage: Usage
    cpu: dict[str, float]  # gunicorn workers, redis, wrk, others, steal

    @property
    def events(self) -> int:
        return self.requests * EVENTS_PER_BATCH

    @property
    def events_per_second(self) -> float:
        return self.load.rps * EVENTS_PER_BATCH


def ingest_run(stack: Stack, config: Path, redis_url: str, redis_process: psutil.Process, workers: int, plan: Plan,
               seconds: float, label: str, stopping: Sequence[Service]) -> tuple[IngestRun, Usage | None, Service]:  # fmt: skip
    """``collector serve --workers W`` under wrk at 32 connections, once ``stopping`` (sent SIGTERM before) are gone;
    then, for the main runs, Redis idle with the same clients connected. Returns both and the running server."""
    redis = Redis.from_url(redis_url)
    collector, url = stack.collector(config, redis_url, workers)
    timed_load(url + "/collect", CONNECTIONS, plan.warmup_seconds)  # connections to Redis, scripts loaded, code warm
    for service in stopping:
        service.stop()
    time.sleep(SETTLE_SECONDS)
    empty_outboxes(redis)
    meter = Meter.begin({"gunicorn": descendants(collector), "redis": [redis_process]})
    before = snapshot(redis)
    load = timed_load(url + "/collect", CONNECTIONS, seconds)
    time.sleep(SETTLE_SECONDS)
    usage = Usage.between(before, snapshot(redis))
    cpu = meter.end()
    idle = idle_usage(redis, plan.idle_seconds) if label != SIZING else None
    return IngestRun(label, workers, load, entries_queued(redis), usage, cpu), idle, collector


# 2. and 4. delivery


@dataclass(frozen=True)
class DrainRun:
    supervisors: int
    deliveries: int  # Depict arrays + Commerce Web Events
    events: int  # each delivered to both vendors
    delivered: int  # deliveries recorded as delivered during the run
    seconds: float  # release -> last arrival at the stand-ins
    usage: Usage
    cpu: dict[str, float]  # supervisors, delivery processes, redis, stand-ins, others, steal
    idle: Usage

    @property
    def deliveries_per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds else math.nan

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else math.nan


def delivered_so_far(redis: Redis) -> int:
    return sum(count for (site, _, outcome), count in delivery_counts(redis).items() if site == SITE and outcome == "delivered")


def jobs_running(redis: Redis) -> bool:
    return any(worker.get_current_job_id() for worker in Worker.all(connection=redis))


def drain(redis: Redis, standins: StandIns, requests: int, timeout: float, measure: Mapping[str, list[psutil.Process]]
          ) -> tuple[int, int, int, int, float, Usage, dict[str, float]]:  # fmt: skip
    """Put ``requests`` entries per destination back in the outboxes and wait until the running workers
    delivered and recorded them all; returns deliveries, events, recorded, seconds, Redis usage, CPU."""
    depict, commerce, events = stage_from_pool(redis, requests)
    standins.receipts.reset()
    done_before = delivered_so_far(redis)
    meter = Meter.begin(dict(measure))
    before = snapshot(redis)
    started = time.time()
    release_outboxes(redis)

    def arrived() -> bool:
        return min(standins.receipts.count(vendor) for vendor in DESTINATIONS) >= events

    try:
        wait_until(arrived, timeout, "delivery")
        wait_until(lambda: delivered_so_far(redis) - done_before >= depict + commerce, 10, "deliveries recorded")
        wait_until(lambda: not jobs_running(redis), 10, "the last job finished")
    except TimeoutError as error:
        print(f"  ! {error}; the figures count what was done")
    time.sleep(JOB_DONE_SECONDS)
    usage = Usage.between(before, snapshot(redis))
    cpu = meter.end()
    seconds = max(standins.receipts.last_arrival() - started, 0.0)
    return depict + commerce, events, delivered_so_far(redis) - done_before, seconds, usage, cpu


def drain_run(redis: Redis, redis_process: psutil.Process, supervisors: list[Service], standins: StandIns, requests: int,
              plan: Plan) -> DrainRun:  # fmt: skip
    """A warm-up drain, Redis idle, then the measured drain, with the supervisors running now."""
    groups = {
        "supervisors": [service.processes()[0] for service in supervisors],
        "delivery processes": [process for service in supervisors for process in descendants(service)],
        "redis": [redis_process],
        "stand-ins": standins.service.processes(),
    }
    drain(redis, standins, plan.warmup_requests, plan.timeout_seconds, {})
    idle = idle_usage(redis, plan.idle_seconds)
    deliveries, events, delivered, seconds, usage, cpu = drain(redis, standins, requests, plan.timeout_seconds, groups)
    return DrainRun(len(supervisors), deliveries, events, delivered, seconds, usage, cpu, idle)


# the stage


def run(quick: bool = False) -> list[Row]:
    plan = QUICK if quick else FULL
    default_workers = serve_workers()
    heading("Redis: how far one Redis goes (CPU per /collect request, per delivery, per event; sizing)")
    print(f"load generator: {generator_name()}; {CONNECTIONS} connections, {EVENTS_PER_BATCH} events per request, "
          f"fresh ids. {NOTE}. nproc = {os.cpu_count()}.")  # fmt: skip
    with Stack("redis") as stack:
        server = stack.redis()
        redis = Redis.from_url(server.url)
        redis_process = psutil.Process(server.pid)
        print(f"redis-server {redis.info('server')['redis_version']} (embedded, AOF everysec, noeviction), "
              f"pid {server.pid}, used by nothing else")  # fmt: skip
        standins = start_standins(stack)
        config = write_config(stack.dir / "collector.toml", standins.depict_url, standins.commerce_url)
        settings = load_config(config).settings

        stopping: list[Service] = []  # sent SIGTERM, winding down while the next one starts

        def serve(workers: int, seconds: float, label: str) -> tuple[IngestRun, Usage | None]:
            """An ingest run; the main runs' entries go to the pool for the delivery runs, the sizing runs' away."""
            result, idle, collector = ingest_run(stack, config, server.url, redis_process, workers, plan, seconds, label,
                                                 stopping)  # fmt: skip
            collector.terminate()
            stopping[:] = [collector]
            empty_outboxes(redis) if label == SIZING else pool_outboxes(redis)
            return result, idle

        # 1a. ingest on a fresh Redis, as the ingest stage runs it
        fresh, fresh_idle = serve(default_workers, plan.ingest_seconds, FRESH)
        heading(f"Redis 1a. Ingest, {FRESH} (as the ingest stage has it): Redis CPU per POST /collect")
        print_ingest(fresh, fresh_idle)

        # 1b. the steady state: a full dedupe window behind every lookup
        seeded = seed_dedupe_window(redis, settings.dedupe_window_seconds)
        steady = fresh
        if seeded is None:
            print("\n(no steady-state run: this collector's Outbox.try_enqueue takes no `now`; figures are a fresh Redis')")
        else:
            steady, steady_idle = serve(default_workers, plan.ingest_seconds, STEADY)
            heading(f"Redis 1b. Ingest, {STEADY} (the steady state after a day): Redis CPU per POST /collect")
            print(f"seeded before the collector started: {seeded}")
            print_ingest(steady, steady_idle)
        print(COMMANDSTATS_NOTE)

        # 4. ingest sizing, in the same state
        sizing = [serve(workers, plan.sizing_seconds, SIZING)[0] for workers in SIZING_WORKERS]
        available = pooled(redis)

        # 2. delivery, one supervisor; 4. then two
        requests = min(plan.delivery_requests, (available - len(SUPERVISORS) * plan.warmup_requests) // len(SUPERVISORS))
        heading("Redis 2. Delivery: Redis CPU while collector worker drains the outboxes")
        print(f"each run: {plan.warmup_requests} requests' outbox entries drained first (warm-up, not measured), then "
              f"{requests} requests' entries put back at once; delivery settings: deliveries_per_job = "
              f"{settings.delivery.deliveries_per_job}, concurrency = {settings.delivery.concurrency}")  # fmt: skip
        drains = []
        supervisors: list[Service] = []
        for count in SUPERVISORS:
            while len(supervisors) < count:
                number = len(supervisors) + 1
                supervisors.append(stack.worker(config, server.url, name=f"worker-{number}",
                                                registered=number * len(DESTINATIONS)))  # fmt: skip
            for service in stopping:
                service.stop()
            drains.append(drain_run(redis, redis_process, supervisors, standins, requests, plan))
            print_delivery(drains[-1])
        print(COMMANDSTATS_NOTE)
        for service in supervisors:  # both wind down at once; closing the stack waits for them
            service.terminate()

    delivery_us = us(drains[0].usage.core, drains[0].events)
    print_end_to_end([fresh, steady] if steady is not fresh else [fresh], drains)
    print_sizing(fresh, steady, sizing, default_workers, drains)
    steady_us = us(steady.usage.core, steady.events)
    return [
        Row("redis", f"Redis CPU per /collect, {steady.label}", "—", f"{us(steady.usage.core, steady.requests):.0f} µs",
            None, "none: sizing figure", None),
        Row("redis", f"Redis CPU per delivery ({drains[0].deliveries - drains[0].events} Depict arrays + "
            f"{drains[0].events} Commerce Web Events)", "—", f"{us(drains[0].usage.core, drains[0].deliveries):.1f} µs",
            None, "none: sizing figure", None),
        Row("redis", "Redis CPU per delivered event (both vendors)", "—", f"{delivery_us:.1f} µs", None,
            "none: sizing figure", None),
        Row("redis", f"events/s per Redis core, end to end, {steady.label} (1 s / (ingest {steady_us:.1f} + delivery "
            f"{delivery_us:.1f} µs per event))", "—", f"{1e6 / (steady_us + delivery_us):,.0f}", None,
            "none: sizing figure", None),
    ]  # fmt: skip


def print_ingest(run: IngestRun, idle: Usage | None) -> None:
    print(f"collector serve --workers {run.workers} (default), {run.load.seconds:.1f} s of wrk at {CONNECTIONS} connections, "
          f"no worker running: {run.load.rps:.0f} req/s, {run.load.errors} errors; {run.requests} requests "
          f"({run.events} events) queued in Redis")  # fmt: skip
    print_cpu(run.usage, {"request": run.requests, "event": run.events}, idle)
    print_traffic(run.usage, run.requests, "request")
    print_commands(run.usage, run.requests, "request")


def print_delivery(run: DrainRun) -> None:
    print(f"\ncollector worker x {run.supervisors} ({run.supervisors * len(DESTINATIONS)} delivery processes): "
          f"{run.deliveries} deliveries ({run.deliveries - run.events} Depict arrays + {run.events} Commerce Web Events; "
          f"{run.events} events, each to both vendors) in {run.seconds:.1f} s; {run.delivered} recorded as delivered")  # fmt: skip
    print_cpu(run.usage, {"delivery": run.deliveries, "event": run.events}, run.idle)
    print_traffic(run.usage, run.events, "event")
    print_commands(run.usage, run.events, "event")


def print_end_to_end(ingests: Sequence[IngestRun], drains: Sequence[DrainRun]) -> None:
    heading("Redis 3. One Redis core, ingest + delivery")
    drain_1 = drains[0]
    delivery_main, delivery_whole = us(drain_1.usage.core, drain_1.events), us(drain_1.usage.cpu, drain_1.events)
    rows, lines = [], []
    for run in ingests:
        for thread, ingest_us, delivery_us in (
            ("main thread", us(run.usage.core, run.events), delivery_main),
            ("whole process", us(run.usage.cpu, run.events), delivery_whole),
        ):
            together = ingest_us + delivery_us
            rows.append([run.label, thread, f"{ingest_us:.1f}", f"{delivery_us:.1f}", f"{together:.1f}",
                         f"{1e6 / ingest_us:,.0f}", f"{1e6 / delivery_us:,.0f}", f"{1e6 / together:,.0f}"])  # fmt: skip
        ingest_us = us(run.usage.core, run.events)
        lines.append(f"one Redis core ({run.label}): ~{1e6 / (ingest_us + delivery_main):,.0f} events/s end to end "
                     f"(ingest {ingest_us:.1f} µs + delivery {delivery_main:.1f} µs of Redis CPU per event)")  # fmt: skip
    print(table(["ingest on", "Redis CPU", "ingest µs/event", "delivery µs/event", "together µs/event",
                 "events/s per core: ingest alone", "delivery alone", "end to end"], rows))  # fmt: skip
    print("\n" + "\n".join(lines))
    print_app_cores(ingests[-1], drain_1)
    print("\nEnd to end (every event accepted and delivered) is the binding figure. Main thread: every command, the "
          "network I/O and the AOF writes, what one core must carry; the whole process adds Redis's background threads. "
          "Latency grows well before a core is 100% busy: plan for a fraction of these rates.")  # fmt: skip
    if len(drains) > 1:
        print("\nRedis CPU per delivered event by worker run (the figures above take the first):")
        print(table(["supervisors", "events/s", "main thread µs/event", "commands/event", "socket reads/event",
                     "commands per read"],
                    [[run.supervisors, f"{run.events_per_second:,.0f}", f"{us(run.usage.core, run.events):.1f}",
                      f"{run.usage.processed / run.events:.2f}", f"{run.usage.reads / run.events:.2f}",
                      f"{run.usage.processed / run.usage.reads if run.usage.reads else math.nan:.2f}"] for run in drains]))  # fmt: skip
        slow, fast = sorted(drains[:2], key=lambda run: run.events_per_second)
        if us(fast.usage.core, fast.events) < us(slow.usage.core, slow.events):
            print("Less Redis CPU per event at the higher rate for about the same commands and socket reads: most "
                  "likely because a busier Redis serves more clients per event-loop pass (one epoll wait, one AOF "
                  "write, one wake-up per pass), so CPU per event measured below saturation overstates a saturated "
                  "Redis's, and the end-to-end rates above lean conservative.")  # fmt: skip
        else:
            print("The higher rate did not cost less Redis CPU per event this time: the difference between the runs "
                  "is within this machine's noise (see 'others' in 4.).")  # fmt: skip


def print_app_cores(ingest: IngestRun, drain_1: DrainRun) -> None:
    """How many cores of the collector's own processes one Redis core keeps busy, per event, from /proc."""
    gunicorn = ingest.cpu["gunicorn"] / ingest.events
    delivery = drain_1.cpu["delivery processes"] / drain_1.events
    supervisor = drain_1.cpu["supervisors"] / drain_1.events
    redis = ingest.cpu["redis"] / ingest.events + drain_1.cpu["redis"] / drain_1.events
    app = gunicorn + delivery + supervisor
    print(f"per event ({ingest.label}), from /proc: gunicorn workers {gunicorn * 1e6:.0f} µs + delivery processes "
          f"{delivery * 1e6:.0f} µs + supervisor {supervisor * 1e6:.0f} µs = {app * 1e6:.0f} µs of CPU in the collector's "
          f"own processes, against {redis * 1e6:.0f} µs in redis-server: one Redis core keeps about {app / redis:.0f} "
          f"cores of them busy (on this machine; the vendors' real latency adds waiting, not CPU).")  # fmt: skip


def print_sizing(fresh: IngestRun, steady: IngestRun, sizing: Sequence[IngestRun], default_workers: int,
                 drains: Sequence[DrainRun]) -> None:  # fmt: skip
    heading("Redis 4. Sizing on this machine")
    cores = os.cpu_count()
    print(f"This machine has {cores} cores. Every run shares them among gunicorn workers or delivery processes, "
          f"redis-server, the stand-ins, wrk and whatever else runs on it: figures beyond {cores} busy processes show "
          f"them sharing {cores} cores, not how they scale on more. 'others' = CPU the rest of the machine used "
          f"meanwhile (other processes; the bench's own Python), 'steal' = taken by the hypervisor, both in cores.\n")  # fmt: skip
    print(f"gunicorn workers -> events/s accepted (collector serve --workers W, wrk at {CONNECTIONS} connections, no worker):")
    rows = []
    ingests = [fresh] + sorted({id(run): run for run in [steady, *sizing] if run is not fresh}.values(), key=lambda r: r.workers)
    for run in ingests:
        label = f"{run.workers}" + (" (default)" if run.workers == default_workers else "")
        rows.append([label, steady.label if run.label == SIZING else run.label, f"{run.load.seconds:.1f}", f"{run.load.rps:.0f}", f"{run.events_per_second:,.0f}",
                     f"{run.load.p99_ms:.1f}", run.load.errors, per_thousand(run.cpu["gunicorn"], run.events),
                     per_thousand(run.cpu["redis"], run.events), per_thousand(run.cpu["wrk"], run.events),
                     f"{us(run.usage.core, run.requests):.0f}", f"{run.cpu['others'] / run.load.seconds:.2f}",
                     f"{run.cpu['steal'] / run.load.seconds:.2f}"])  # fmt: skip
    print(table(["gunicorn workers", "Redis", "s", "req/s", "events/s", "p99 ms", "errors",
                 "CPU s / 1k events: gunicorn workers", "redis-server", "wrk", "Redis µs / request", "others",
                 "steal"], rows))  # fmt: skip
    print("\nworker supervisors -> events/s delivered (collector worker against the fast stand-ins):")
    rows = []
    for run in drains:
        rows.append([run.supervisors, run.supervisors * len(DESTINATIONS), run.deliveries, run.events, f"{run.seconds:.1f}",
                     f"{run.deliveries_per_second:,.0f}", f"{run.events_per_second:,.0f}",
                     per_thousand(run.cpu["supervisors"], run.events), per_thousand(run.cpu["delivery processes"], run.events),
                     per_thousand(run.cpu["redis"], run.events), per_thousand(run.cpu["stand-ins"], run.events),
                     f"{us(run.usage.core, run.deliveries):.1f}", f"{run.cpu['others'] / run.seconds:.2f}",
                     f"{run.cpu['steal'] / run.seconds:.2f}"])  # fmt: skip
    print(table(["supervisors", "delivery processes", "deliveries", "events", "s", "deliveries/s", "events/s",
                 "CPU s / 1k events: supervisors", "delivery processes", "redis-server", "stand-ins",
                 "Redis µs / delivery", "others", "steal"], rows))  # fmt: skip
    print("events: each delivered to both vendors (per request: a Depict array of 10 and 10 Commerce Web Events). "
          "CPU s: user + system seconds from /proc over the run; supervisors: their own process (the dispatcher "
          "thread); delivery processes include their RQ scheduler processes. Redis µs: main thread, from INFO cpu.")  # fmt: skip
