"""Delivery at a vendor's speed: one ``collector worker`` vs a bare aiohttp client against a stand-in that answers late.

Part of the delivery stage (``python -m tests.bench --only delivery``). The
fast stand-ins of ``standin.py`` answer at once; a real vendor takes 50-150 ms,
and then what carries a delivery process is how many requests it keeps in
flight. Here the vendor is ``latency_standin.py`` (asyncio: thousands of
waiting requests cost it nothing), its delay and rate limit set per row.

Deliveries: N events are queued through ``POST /collect`` once (10-event
batches whose events carry an Account, so that each Commerce Web Event body
is about 581 bytes as in the issue's figures), with no worker running; the
outboxes' entries are then taken out of Redis. Each run puts back as many
copies of them as it needs, every copy with new event ids (and the ids the
collector derives from them: the Web Event id, the Depict delivery id), so
that no delivery repeats within the stage. A run starts from an empty Redis
(``FLUSHALL``), starts ``collector worker`` at its default settings, puts
the backlog in the outboxes and wakes the dispatcher, as ``/collect`` does.

Rates: the stand-in notes every answer with the time its request arrived;
a rate is the answers whose requests arrived within a window that opens
after a warm-up (connections opened, jobs running) and closes while the
backlog still lasts. Each row's baseline runs in the same stage, just
before it: a bare aiohttp client with ``bare_aiohttp.IN_FLIGHT`` requests
in flight, one process per destination, posting the worker's own requests
(its vendor clients' URLs and headers, the deliveries' bodies). Rows:

1. vendor latency 150 ms and 50 ms: Commerce only, events/s of the worker /
   the bare client's (target >= 0.85); Depict's batched path (10 events per
   request) printed beside it, measured alone the same way;
2. 0 ms (CPU-bound): Commerce only, events per CPU second of the worker's
   processes (supervisor, delivery processes, RQ's scheduler) / the bare
   client's (target >= 0.5), and the Commerce delivery process's CPU per
   delivery by part, from py-spy samples (see :func:`profile`);
3. Commerce limited to 200 requests/s (fixed one-second windows, 429 with
   ``Retry-After: 1`` beyond; 50 ms latency, so that even 16 threads exceed
   the limit): after the first 10 s, >= 0.8 x 200 accepted/s, 429s <= 10%
   of the requests, nothing dead-lettered;
4. Depict slowing to 2 s under a running worker while Commerce answers in
   150 ms, both outboxes full: Commerce's events/s after / before
   (target >= 0.8);
5. drain: a backlog of 100,000 Commerce events at 150 ms (``--quick``:
   10,000), the time until the stand-in has every id, capped (then the time
   is projected from the rate) and the Commerce delivery process's peak RSS
   (psutil, every 0.5 s; target <= 150 MB).

The bench imports nothing of the worker but ``worker.runtime.vendor_clients``
(for the requests' URLs and headers), its User-Agent and the dead letters'
count.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
from redis import Redis
from rq import Worker

from collector.config.loading import load_config
from collector.mapping.commerce import web_event_id
from collector.mapping.routing import depict_delivery_id
from collector.storage.outbox import OUTBOX_REGISTRY, decode_entry, encode_entry, outbox_key, wake_dispatchers
from tests.bench import bare_aiohttp
from tests.bench.bare_aiohttp import Request
from tests.bench.latency_standin import STATUS_LIMITED, STATUS_OK, LatencyStandIn, VendorSettings, start_latency_standin
from tests.bench.loadgen import send_batches
from tests.bench.payload import EVENTS_PER_BATCH, batch_template, commerce_account
from tests.bench.report import Row, heading, ratio, table
from tests.bench.site import SITE, write_config
from tests.bench.stack import REPO, Service, Stack, cpu_seconds, serve_workers, wait_until
from worker.dead_letters import DeadLetters

USER_AGENT = "first-party-collector/0.1"  # the worker's, which the lead keeps stable
LATENCY_TARGET = 0.85
CPU_TARGET = 0.5
LIMIT_RATE = 200
LIMIT_DELAY_MS = 50.0
LIMIT_WARM_SECONDS = 10.0
LIMIT_RATE_TARGET = 0.8
LIMIT_429_SHARE = 0.10
SLOW_DEPICT_MS = 2000.0
SLOW_TARGET = 0.8
DRAIN_DELAY_MS = 150.0
RSS_TARGET_MB = 150.0
RSS_EVERY_SECONDS = 0.5
BACKLOG_MARGIN = 1.5  # a run's backlog: the bare client's rate x the run's seconds x this
MIN_BACKLOG = 2_000
MAX_BARE_REQUESTS = 5_000  # distinct requests handed to a bare client; beyond, it cycles (what it costs to pickle them)
PROFILE_RATE = 100  # py-spy samples per second
STEADY_SHARE = 0.1  # the worker's rate is steady when two seconds in a row differ by at most this share
STEADY_POLL_SECONDS = 0.25
WRITE_LAG_SECONDS = 0.3  # a stand-in's line is written when the answer leaves: this long after the delay, all are in
PARTS = ("HTTP client", "JSON", "ledger", "RQ", "redis-py", "worker/jobs glue", "other")


@dataclass(frozen=True)
class Plan:
    events: int  # queued through /collect once; every run uses copies of them
    warm_seconds: float  # the bare client's warm-up, and the least of the worker's (see steady_from)
    most_warm_seconds: float  # the worker's warm-up at most, when its rate does not settle before
    window_seconds: float
    limited_seconds: float  # the 429 run, its first LIMIT_WARM_SECONDS not counted
    drain_events: int
    drain_cap_seconds: float
    profile_seconds: float
    depict_at: tuple[float, ...]  # the latencies at which Depict's batched path is measured too


FULL = Plan(10_000, 3.0, 12.0, 8.0, 40.0, 100_000, 120.0, 8.0, (150.0, 50.0))
QUICK = Plan(2_000, 1.5, 5.0, 3.0, 13.0, 10_000, 10.0, 2.0, ())


# the deliveries


def worker_vendor_clients(config_path: Path) -> dict[tuple[str, str], Any]:
    """The worker's own vendor clients (their URLs and headers) for ``config_path``."""
    from worker.runtime import vendor_clients

    return vendor_clients(load_config(config_path))


class Backlog:
    """The entries ``/collect`` queued, handed out as fresh copies: new ids each time, never a repeat."""

    def __init__(self, entries: dict[str, list[list[dict[str, Any]]]]):
        self._entries = entries
        self._generations = itertools.count(1)

    def deliveries_per_entry(self, destination: str) -> float:
        entries = self._entries[destination]
        return sum(len(entry) for entry in entries) / len(entries)

    def copies(self, destination: str, deliveries: int) -> Iterator[list[dict[str, Any]]]:
        """Entries (lists of deliveries) holding at least ``deliveries`` deliveries, each with ids never handed out."""
        handed = 0
        while handed < deliveries:
            suffix = f"-g{next(self._generations)}"
            for entry in self._entries[destination]:
                yield [_renamed(delivery, suffix) for delivery in entry]
                handed += len(entry)
                if handed >= deliveries:
                    return


def _renamed(delivery: dict[str, Any], suffix: str) -> dict[str, Any]:
    """The same delivery for events whose ids end in ``suffix``, with the ids the collector derives from them."""
    event_ids = [event_id + suffix for event_id in delivery["event_ids"]]
    queued = {**delivery, "event_ids": event_ids, "queued_at": time.time()}
    if delivery["destination"] == "commerce":
        web_id = web_event_id(SITE, event_ids[0])
        return {**queued, "id": web_id, "body": {**delivery["body"], "id": web_id}}
    body = [{**event, "deduplication_id": event["deduplication_id"] + suffix} for event in delivery["body"]]
    return {**queued, "id": depict_delivery_id(SITE, event_ids), "body": body}


def push(redis: Redis, destination: str, entries: list[list[dict[str, Any]]]) -> int:
    """Put ``entries`` in the site's outbox for ``destination`` as ``/collect`` would; returns the deliveries."""
    key = outbox_key(SITE, destination)
    encoded = [encode_entry(entry) for entry in entries]
    with redis.pipeline(transaction=False) as pipe:
        for start in range(0, len(encoded), 1000):
            pipe.rpush(key, *encoded[start : start + 1000])
        pipe.sadd(OUTBOX_REGISTRY, key)
        pipe.execute()
    return sum(len(entry) for entry in entries)


def requests_for(clients: dict[tuple[str, str], Any], entries: list[list[dict[str, Any]]]) -> list[Request]:
    """What the worker would send for these deliveries: its client's URL, its User-Agent and headers, the body."""
    requests = []
    for entry in entries:
        for delivery in entry:
            client = clients[(SITE, delivery["destination"])]
            headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json", **client.headers_for(delivery)}
            requests.append(Request(client.url, delivery["body"], headers))
    return requests


# a run


@dataclass(frozen=True)
class Rate:
    """What one sender did over a measured window."""

    sender: str
    destination: str
    seconds: float
    requests: int  # accepted (200)
    events: int
    limited: int = 0  # 429s
    cpu_seconds: float = math.nan  # the sender's processes, over the window
    note: str = ""
    start: float = 0.0  # the window's, wall clock

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def events_per_cpu_second(self) -> float:
        return self.events / self.cpu_seconds if self.cpu_seconds else math.nan

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / self.requests * 1e6 if self.requests else math.nan


@dataclass
class Lab:
    """What every run of the stage shares."""

    stack: Stack
    redis: Redis
    redis_url: str
    standin: LatencyStandIn
    config: Path
    backlog: Backlog
    clients: dict[tuple[str, str], Any]
    plan: Plan
    runs: int = 0
    findings: list[str] = field(default_factory=list)

    def count(self, sender: str, destination: str, start: float, seconds: float, cpu: float = math.nan) -> Rate:
        ok = self.standin.answers.count(destination, STATUS_OK, start, start + seconds)
        limited = self.standin.answers.count(destination, STATUS_LIMITED, start, start + seconds)
        return Rate(sender, destination, seconds, ok.requests, ok.events, limited.requests, cpu, start=start)


def bare_rate(lab: Lab, destination: str, latency_ms: float) -> Rate:
    """The bare client alone on ``destination``, at the stand-in's present settings."""
    expected = bare_aiohttp.IN_FLIGHT / max(latency_ms / 1000, 0.001)
    needed = min(int(expected * (lab.plan.warm_seconds + lab.plan.window_seconds + 1)), MAX_BARE_REQUESTS)
    requests = requests_for(lab.clients, list(lab.backlog.copies(destination, needed)))
    start, sent = bare_aiohttp.run({destination: requests}, bare_aiohttp.IN_FLIGHT, lab.plan.warm_seconds, lab.plan.window_seconds)
    time.sleep(0.3)  # the last answers' lines reach the files
    failed = sum(s.failed for s in sent)
    rate = lab.count(f"bare aiohttp, {bare_aiohttp.IN_FLIGHT} in flight", destination, start, lab.plan.window_seconds,
                     sum(s.window_cpu_seconds for s in sent))  # fmt: skip
    return replace(rate, note=f"{failed} failed" if failed else "")


@contextmanager
def worker_running(lab: Lab, what: str) -> Iterator[Service]:
    """A fresh Redis (FLUSHALL) and a fresh ``collector worker``, stopped on the way out; its log's warnings noted."""
    lab.redis.flushall()
    lab.runs += 1
    service = lab.stack.worker(lab.config, lab.redis_url, name=f"worker-{lab.runs}")
    try:
        yield service
    finally:
        service.stop()
        lab.findings.extend(f"{what}: {line}" for line in log_findings(service.log_path))


def log_findings(path: Path, keep: int = 4) -> list[str]:
    """The worker log's warnings and errors: how many of each first line, the first few."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    notable = [line for line in lines if _LEVELS.search(line)]
    counted = Counter(_without_numbers(line) for line in notable)
    return [f"{count} x {text[:200]}" for text, count in counted.most_common(keep)]


_LEVELS = re.compile(r"WARNING|ERROR|CRITICAL|Traceback")
_NUMBERS = re.compile(r"(?<!HTTP )(?<!\d)\d+")  # an HTTP status stays


def _without_numbers(line: str) -> str:
    """A log line from its level on, numbers (counts, times, PIDs) as N, so that lines of one kind count as one."""
    found = _LEVELS.search(line)
    return _NUMBERS.sub("N", line[found.start() if found else 0 :])


def fill_worker(lab: Lab, needs: dict[str, int]) -> float:
    """Put ``needs[destination]`` fresh deliveries in each outbox and wake the dispatcher; returns when."""
    for destination, deliveries in needs.items():
        push(lab.redis, destination, list(lab.backlog.copies(destination, deliveries)))
    wake_dispatchers(lab.redis)
    return time.time()


def worker_rate(lab: Lab, worker: Service, destination: str, start: float, latency_ms: float) -> Rate:
    """The worker's rate to ``destination`` over a window that opens once its rate is steady after ``start``
    (:func:`steady_from`), and the CPU its whole process tree used meanwhile."""
    window_start = steady_from(lab, destination, start, latency_ms)
    group = worker.processes()
    before = cpu_seconds(group)
    _sleep_until(window_start + lab.plan.window_seconds)
    used = cpu_seconds(group) - before
    time.sleep(latency_ms / 1000 + WRITE_LAG_SECONDS)
    rate = lab.count("collector worker", destination, window_start, lab.plan.window_seconds, used)
    left = lab.redis.llen(outbox_key(SITE, destination))
    note = f"warm-up {window_start - start:.1f} s" + ("" if left else "; ! backlog ran out: rate understated")
    return replace(rate, note=note)


def steady_from(lab: Lab, destination: str, start: float, latency_ms: float) -> float:
    """Now, once at least ``warm_seconds`` after ``start`` the last two whole seconds' accepted requests (of
    those whose answers are surely written) differ by at most STEADY_SHARE, or ``most_warm_seconds`` after
    ``start``: a worker that adapts its concurrency ramps up first, and its ramp is not its rate."""
    lag = latency_ms / 1000 + WRITE_LAG_SECONDS
    _sleep_until(start + lab.plan.warm_seconds)
    while time.time() < start + lab.plan.most_warm_seconds:
        settled = time.time() - lag
        if settled - 2 >= start:
            before = lab.standin.answers.count(destination, STATUS_OK, settled - 2, settled - 1).requests
            last = lab.standin.answers.count(destination, STATUS_OK, settled - 1, settled).requests
            if last and abs(last - before) <= STEADY_SHARE * max(last, before):
                break
        time.sleep(STEADY_POLL_SECONDS)
    return time.time()


def _sleep_until(moment: float) -> None:
    time.sleep(max(moment - time.time(), 0.0))


def backlog_size(rate: Rate, seconds: float, margin: float = BACKLOG_MARGIN) -> int:
    """Deliveries enough for ``seconds`` at ``margin`` x the bare client's rate: the worker's backlog never runs out
    (it outlives its window: ``worker_rate`` says so if not) and costs no more to build than it must."""
    return max(int(rate.requests_per_second * seconds * margin), MIN_BACKLOG)


def delivery_pid(redis: Redis, destination: str) -> int | None:
    """The PID of the delivery process that takes ``destination``'s queue, as RQ knows it."""
    for worker in Worker.all(connection=redis):
        if any(destination in name for name in worker.queue_names()):
            return worker.pid
    return None


# rows 1: latency


@dataclass(frozen=True)
class LatencyResult:
    latency_ms: float
    bare: Rate
    ours: Rate
    depict_bare: Rate | None
    depict_ours: Rate | None


def at_latency(lab: Lab, latency_ms: float, with_depict: bool) -> LatencyResult:
    both = VendorSettings(delay_ms=latency_ms)
    lab.standin.configure(both, both)
    bare = bare_rate(lab, "commerce", latency_ms)
    ours = ours_alone(lab, "commerce", bare, latency_ms, f"{latency_ms:g} ms, Commerce")
    depict_bare = depict_ours = None
    if with_depict:
        depict_bare = bare_rate(lab, "depict", latency_ms)
        depict_ours = ours_alone(lab, "depict", depict_bare, latency_ms, f"{latency_ms:g} ms, Depict")
    return LatencyResult(latency_ms, bare, ours, depict_bare, depict_ours)


def ours_alone(lab: Lab, destination: str, bare: Rate, latency_ms: float, what: str) -> Rate:
    with worker_running(lab, what) as worker:
        start = fill_worker(lab, {destination: backlog_size(bare, lab.plan.most_warm_seconds + lab.plan.window_seconds + 3)})
        return worker_rate(lab, worker, destination, start, latency_ms)


def print_latency(results: list[LatencyResult]) -> None:
    rows = []
    for result in results:
        pairs = [(result.bare, result.ours), (result.depict_bare, result.depict_ours)]
        for bare, ours in pairs:
            if bare is None or ours is None:
                continue
            for rate in (bare, ours):
                rows.append([f"{result.latency_ms:g} ms", rate.destination, rate.sender, f"{rate.seconds:g}",
                             rate.requests, f"{rate.requests_per_second:.0f}", f"{rate.events_per_second:.0f}",
                             f"{rate.cpu_seconds:.2f}", f"{rate.cpu_us_per_request:.0f}",
                             f"{ratio(ours.events_per_second, bare.events_per_second):.2f}" if rate is ours else "",
                             rate.note])  # fmt: skip
    print(table(["latency", "to", "sender", "window s", "requests", "requests/s", "events/s", "CPU s", "CPU µs/request",
                 "ours / bare", "note"], rows))  # fmt: skip


# row 2: CPU-bound, and where the CPU goes


@dataclass(frozen=True)
class CpuResult:
    bare: Rate
    ours: Rate
    commerce_process: Rate  # the Commerce delivery process alone, over the profile's window
    parts: dict[str, int]  # py-spy samples per part
    profile_note: str


def cpu_bound(lab: Lab, stack_dir: Path) -> CpuResult:
    instant = VendorSettings(delay_ms=0.0)
    lab.standin.configure(instant, instant)
    bare = bare_rate(lab, "commerce", 0.0)
    seconds = lab.plan.most_warm_seconds + lab.plan.window_seconds + lab.plan.profile_seconds + 4
    with worker_running(lab, "0 ms, Commerce") as worker:
        start = fill_worker(lab, {"commerce": backlog_size(bare, seconds, margin=1.1)})
        ours = worker_rate(lab, worker, "commerce", start, 0.0)
        pid = delivery_pid(lab.redis, "commerce")
        if pid is None:
            return CpuResult(bare, ours, ours, {}, "no Commerce delivery process found in RQ's registry: no profile")
        process = psutil.Process(pid)
        before, profile_start = cpu_seconds([process]), time.time()
        parts, note = profile(pid, lab.plan.profile_seconds, stack_dir / "py-spy.txt")
        profile_seconds = time.time() - profile_start
        used = cpu_seconds([process]) - before
        time.sleep(0.3)
        alone = lab.count("Commerce delivery process", "commerce", profile_start, profile_seconds, used)
    return CpuResult(bare, ours, alone, parts, note)


def profile(pid: int, seconds: float, output: Path) -> tuple[dict[str, int], str]:
    """py-spy samples of ``pid`` (``record --format raw --nonblocking --full-filenames``, PROFILE_RATE per second,
    idle threads left out), counted per part by the innermost frame that names one (:func:`part_of`)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(py_spy):
        return {}, "py-spy not installed (pip install py-spy): no profile"
    argv = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--nonblocking", "--full-filenames",
            "--rate", str(PROFILE_RATE), "--duration", str(max(1, round(seconds))), "--output", str(output)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0 or not output.exists():
        return {}, f"py-spy failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}"
    counts: dict[str, int] = dict.fromkeys(PARTS, 0)
    for line in output.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack and samples.isdigit():
            counts[part_of_stack(stack.split(";"))] += int(samples)
    how = (f"py-spy record --nonblocking at {PROFILE_RATE} Hz for {max(1, round(seconds))} s on the Commerce delivery "
           f"process (PID {pid}), idle threads left out; each sample counted for its innermost frame in a known part")  # fmt: skip
    return counts, how


_LIBRARY_PARTS = {
    **dict.fromkeys(("aiohttp", "httpx", "httpcore", "h11", "anyio", "sniffio", "yarl", "multidict", "propcache",
                     "frozenlist", "aiosignal", "aiohappyeyeballs", "uvloop", "certifi", "idna", "pycurl"), "HTTP client"),
    "orjson": "JSON",
    "rq": "RQ",
    "redis": "redis-py",
}  # fmt: skip
_STDLIB_PARTS = {"json": "JSON", "asyncio": "HTTP client"}
_STDLIB = Path(sys.base_prefix).resolve()


def part_of(path: str) -> str | None:
    """The part a frame's file belongs to; None for the standard library's other modules (socket, threading,
    logging, concurrent.futures...), which count for the frame that called them."""
    parts = Path(path).parts
    if "site-packages" in parts or "dist-packages" in parts:
        index = parts.index("site-packages" if "site-packages" in parts else "dist-packages")
        package = parts[index + 1].removesuffix(".py") if index + 1 < len(parts) else ""
        return _LIBRARY_PARTS.get(package, "other")
    if path.startswith(str(REPO)):
        relative = Path(path).relative_to(REPO)
        if relative.parts[0] == "worker":
            return "ledger" if relative.name == "ledger.py" else "worker/jobs glue"
        return "worker/jobs glue" if relative.parts[0] == "collector" else "other"
    if path.startswith(str(_STDLIB)):
        relative = Path(path).relative_to(_STDLIB).parts
        module = relative[2] if len(relative) > 2 and relative[0] == "lib" else ""
        return _STDLIB_PARTS.get(module.removesuffix(".py"))
    return None


def part_of_stack(frames: list[str]) -> str:
    """Frames outermost first, as py-spy writes them: ``function (path:line)``."""
    for frame in reversed(frames):
        opening = frame.rfind(" (")
        if opening < 0:
            continue
        path = frame[opening + 2 :].rstrip(")").rsplit(":", 1)[0]
        part = part_of(path)
        if part is not None:
            return part
    return "other"


def print_cpu(result: CpuResult) -> None:
    rows = []
    for rate in (result.bare, result.ours, result.commerce_process):
        rows.append([rate.sender, f"{rate.seconds:.1f}", rate.requests, f"{rate.events_per_second:.0f}",
                     f"{rate.cpu_seconds:.2f}", f"{rate.cpu_us_per_request:.0f}", f"{rate.events_per_cpu_second:.0f}",
                     rate.note])  # fmt: skip
    print(table(["sender (0 ms)", "window s", "deliveries", "events/s", "CPU s", "CPU µs/delivery", "events per CPU s",
                 "note"], rows))  # fmt: skip
    print("CPU of `collector worker`: every process of its tree (supervisor and dispatcher, both delivery processes, "
          "RQ's scheduler); of the bare client: its one process.")
    total = sum(result.parts.values())
    if not total:
        print(f"\nCPU by part: {result.profile_note}")
        return
    per_delivery = result.commerce_process.cpu_us_per_request
    print(f"\nCPU per delivery of the Commerce delivery process, by part ({result.profile_note}; "
          f"{total} samples; µs = the part's share of samples x the process's CPU per delivery meanwhile, "
          f"{per_delivery:.0f} µs; the bare client: {result.bare.cpu_us_per_request:.0f} µs in all):")  # fmt: skip
    print(table(["part", "samples", "share", "µs per delivery"],
                [[part, count, f"{count / total:.0%}", f"{count / total * per_delivery:.0f}"]
                 for part, count in result.parts.items()]))  # fmt: skip


# row 3: a rate-limited vendor


@dataclass(frozen=True)
class LimitResult:
    rate: Rate  # after the first LIMIT_WARM_SECONDS
    dead: int

    @property
    def share_429(self) -> float:
        tried = self.rate.requests + self.rate.limited
        return self.rate.limited / tried if tried else math.nan


def rate_limited(lab: Lab) -> LimitResult:
    lab.standin.configure(VendorSettings(delay_ms=LIMIT_DELAY_MS), VendorSettings(delay_ms=LIMIT_DELAY_MS, rate=LIMIT_RATE))
    with worker_running(lab, f"{LIMIT_RATE}/s limit, Commerce"):
        start = fill_worker(lab, {"commerce": int(LIMIT_RATE * lab.plan.limited_seconds * 2)})
        window = lab.plan.limited_seconds - LIMIT_WARM_SECONDS
        _sleep_until(start + lab.plan.limited_seconds)
        time.sleep(0.3)
        rate = lab.count("collector worker", "commerce", start + LIMIT_WARM_SECONDS, window)
        dead = len(DeadLetters(lab.redis))
    return LimitResult(rate, dead)


def print_limited(result: LimitResult, seconds: float) -> None:
    rate = result.rate
    print(table(["Commerce: at most 200 requests/s, 50 ms", "seconds", "accepted (200)", "accepted/s", "429s",
                 "429 share", "dead-lettered"],
                [[f"after the first {LIMIT_WARM_SECONDS:g} s of {seconds:g}", f"{rate.seconds:g}", rate.requests,
                  f"{rate.requests_per_second:.0f}", rate.limited, f"{result.share_429:.1%}", result.dead]]))  # fmt: skip


# row 4: a slow vendor beside a fast one


@dataclass(frozen=True)
class SlowResult:
    before: Rate  # Commerce, Depict at the same latency
    after: Rate  # Commerce, Depict slow
    depict_before: Rate
    depict_after: Rate


def slow_depict(lab: Lab, reference: Rate, depict_reference: Rate) -> SlowResult:
    """Both outboxes full, both vendors at 150 ms; then Depict slows to 2 s under the running worker."""
    fast = VendorSettings(delay_ms=DRAIN_DELAY_MS)
    lab.standin.configure(fast, fast)
    plan = lab.plan
    seconds = 2 * (plan.most_warm_seconds + plan.window_seconds) + 5
    with worker_running(lab, "Depict 2 s, Commerce 150 ms") as worker:
        start = fill_worker(lab, {"commerce": backlog_size(reference, seconds),
                                          "depict": backlog_size(depict_reference, seconds)})  # fmt: skip
        before = worker_rate(lab, worker, "commerce", start, DRAIN_DELAY_MS)
        depict_before = lab.count("collector worker", "depict", before.start, plan.window_seconds)
        lab.standin.configure(VendorSettings(delay_ms=SLOW_DEPICT_MS), fast)
        after = worker_rate(lab, worker, "commerce", time.time(), DRAIN_DELAY_MS)
        time.sleep(SLOW_DEPICT_MS / 1000)  # Depict's answers to the window's last requests are written by now
        depict_after = lab.count("collector worker", "depict", after.start, plan.window_seconds)
    return SlowResult(before, after, depict_before, depict_after)


def print_slow(result: SlowResult) -> None:
    rows = []
    for depict, commerce, depict_rate in (("150 ms", result.before, result.depict_before),
                                          (f"{SLOW_DEPICT_MS / 1000:g} s", result.after, result.depict_after)):  # fmt: skip
        rows.append([depict, f"{commerce.events_per_second:.0f}", f"{depict_rate.events_per_second:.0f}",
                     f"{depict_rate.requests_per_second:.0f}", commerce.note])  # fmt: skip
    print(table(["Depict answers in", "Commerce events/s (150 ms)", "Depict events/s", "Depict requests/s", "note"], rows))


# row 5: drain


@dataclass(frozen=True)
class DrainResult:
    events: int
    delivered: int
    seconds: float  # until the last arrival, or the cap
    capped: bool
    peak_rss_mb: float
    rss_of: str  # which process the RSS is of
    duplicates: int

    @property
    def projected_seconds(self) -> float:
        if not self.capped:
            return self.seconds
        return self.events * self.seconds / self.delivered if self.delivered else math.inf


class PeakRss:
    """The largest RSS of one process, sampled every RSS_EVERY_SECONDS in a thread."""

    def __init__(self, pid: int):
        self._process = psutil.Process(pid)
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss", daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            try:
                self.peak = max(self.peak, self._process.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            self._done.wait(RSS_EVERY_SECONDS)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)


def drain(lab: Lab) -> DrainResult:
    fast = VendorSettings(delay_ms=DRAIN_DELAY_MS)
    lab.standin.configure(fast, fast)
    events = lab.plan.drain_events
    receipts = lab.standin.receipts
    with worker_running(lab, "drain") as worker:
        pid = delivery_pid(lab.redis, "commerce")
        rss_of = f"Commerce delivery process, PID {pid}" if pid else f"supervisor, PID {worker.pid} (no Commerce process in RQ's registry)"
        entries = list(lab.backlog.copies("commerce", events))
        receipts.reset()
        with PeakRss(pid or worker.pid) as rss:
            push(lab.redis, "commerce", entries)
            wake_dispatchers(lab.redis)
            start = time.time()
            try:
                wait_until(lambda: receipts.count("commerce") >= events, lab.plan.drain_cap_seconds, "drain")
                capped = False
            except TimeoutError:
                capped = True
            delivered = receipts.count("commerce")
            seconds = (time.time() - start) if capped else receipts.last_arrival() - start
        duplicates = receipts.duplicates("commerce")
    return DrainResult(events, delivered, seconds, capped, rss.peak / 2**20, rss_of, duplicates)


def print_drain(result: DrainResult, bare: Rate) -> None:
    bare_seconds = result.events / bare.events_per_second if bare.events_per_second else math.nan
    done = (f"{result.seconds:.1f} s" if not result.capped
            else f"capped at {result.seconds:.0f} s with {result.delivered:,} delivered: projected {result.projected_seconds:.0f} s")  # fmt: skip
    print(table(["drain at 150 ms", "events", "time", "events/s", "peak RSS", "duplicates",
                 f"bare client at its rate ({bare.events_per_second:.0f}/s)"],
                [[f"{result.events:,} Commerce events", f"{result.events:,}", done,
                  f"{result.delivered / result.seconds:.0f}" if result.seconds else "—", f"{result.peak_rss_mb:.0f} MB",
                  result.duplicates, f"{bare_seconds:.0f} s"]]))  # fmt: skip
    print(f"peak RSS: of the {result.rss_of}, sampled every {RSS_EVERY_SECONDS:g} s with psutil")


# the stage


def prepare(stack: Stack, plan: Plan) -> Lab:
    """Redis, the stand-in, the config; ``plan.events`` events queued through /collect and taken out of Redis."""
    redis_server = stack.redis()
    redis = Redis.from_url(redis_server.url)
    standin = start_latency_standin(stack)
    config = write_config(stack.dir / "collector-latency.toml", standin.depict_url, standin.commerce_url)
    collector, collector_url = stack.collector(config, redis_server.url, serve_workers())
    filled = send_batches(collector_url + "/collect", plan.events // EVENTS_PER_BATCH,
                          template=batch_template(account=commerce_account()))  # fmt: skip
    collector.stop()
    entries = {destination: [decode_entry(raw) for raw in redis.lrange(outbox_key(SITE, destination), 0, -1)]
               for destination in ("depict", "commerce")}  # fmt: skip
    redis.flushall()
    commerce = [delivery for entry in entries["commerce"] for delivery in entry]
    body_bytes = len(json.dumps(commerce[0]["body"], separators=(",", ":"), ensure_ascii=False).encode())
    print(f"queued through /collect: {len(commerce):,} events in {filled.seconds:.1f} s -> "
          f"{sum(len(e) for e in entries['depict']):,} Depict arrays + {len(commerce):,} Commerce Web Events "
          f"({body_bytes} bytes each); every run sends copies of them with new ids")  # fmt: skip
    return Lab(stack, redis, redis_server.url, standin, config, Backlog(entries), worker_vendor_clients(config), plan)


class Clock:
    """Seconds since the previous call, for the sections' ``(N s)`` lines."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def lap(self) -> None:
        now = time.monotonic()
        print(f"({now - self._last:.0f} s)")
        self._last = now


def run(quick: bool = False) -> list[Row]:
    plan = QUICK if quick else FULL
    clock = Clock()
    heading("2b. Delivery at a vendor's latency: collector worker vs a bare aiohttp client")
    print(f"stand-in: latency_standin.py (aiohttp.web, {bare_aiohttp.loop_name()}, 2 processes on one port); "
          f"bare client: aiohttp on {bare_aiohttp.loop_name()}, {bare_aiohttp.IN_FLIGHT} requests in flight, one process "
          f"per destination; worker: `collector worker` at its default settings. Windows of {plan.window_seconds:g} s "
          f"after a warm-up: the bare client's {plan.warm_seconds:g} s; the worker's until its rate is steady "
          f"(two seconds in a row within {STEADY_SHARE:.0%}), {plan.warm_seconds:g}-{plan.most_warm_seconds:g} s.")  # fmt: skip
    with Stack("vendor-speed") as stack:
        lab = prepare(stack, plan)
        policy = load_config(lab.config).settings.delivery
        print(f"worker delivery settings (defaults): deliveries_per_job = {policy.deliveries_per_job}, "
              f"concurrency = {policy.concurrency}")  # fmt: skip
        clock.lap()

        depict = (f"Depict alone, 10 events per request, at {' and '.join(f'{ms:g} ms' for ms in plan.depict_at)}"
                  if plan.depict_at else "Depict's batched path: in 2b.4, beside Commerce")  # fmt: skip
        heading(f"2b.1 Vendor latency 150 ms and 50 ms (Commerce alone; {depict})")
        latencies = [at_latency(lab, latency, latency in plan.depict_at) for latency in (150.0, 50.0)]
        print_latency(latencies)
        clock.lap()

        heading("2b.2 Vendor at 0 ms: CPU per delivery (Commerce alone)")
        cpu = cpu_bound(lab, stack.dir)
        print_cpu(cpu)
        clock.lap()

        heading(f"2b.3 Commerce rate-limited to {LIMIT_RATE} requests/s (fixed 1 s windows, 429 + Retry-After: 1 beyond)")
        limited = rate_limited(lab)
        print_limited(limited, plan.limited_seconds)
        clock.lap()

        heading("2b.4 Depict slows to 2 s under a running worker (Commerce at 150 ms, both outboxes full)")
        at_150 = latencies[0]
        slow = slow_depict(lab, at_150.bare, at_150.depict_bare or at_150.bare)
        print_slow(slow)
        clock.lap()

        heading(f"2b.5 Drain: {plan.drain_events:,} Commerce events at 150 ms (capped at {plan.drain_cap_seconds:g} s)")
        drained = drain(lab)
        print_drain(drained, at_150.bare)
        clock.lap()

        print("\nworker logs (warnings and errors, per run):" if lab.findings else "\nworker logs: no warnings or errors")
        for finding in lab.findings:
            print(f"  {finding}")
    return rows(latencies, cpu, limited, slow, drained)


def rows(latencies: list[LatencyResult], cpu: CpuResult, limited: LimitResult, slow: SlowResult, drained: DrainResult) -> list[Row]:
    out = []
    for result in latencies:
        share = ratio(result.ours.events_per_second, result.bare.events_per_second)
        out.append(Row("delivery", f"{result.latency_ms:g} ms vendor: Commerce events/s, one worker / bare aiohttp "
                       f"{bare_aiohttp.IN_FLIGHT} in flight", f"{result.bare.events_per_second:.0f}/s",
                       f"{result.ours.events_per_second:.0f}/s", share, f">= {LATENCY_TARGET:.2f}x",
                       share >= LATENCY_TARGET))  # fmt: skip
        if result.depict_bare and result.depict_ours:
            out.append(Row("delivery", f"{result.latency_ms:g} ms vendor: Depict events/s (10 per request), beside it",
                           f"{result.depict_bare.events_per_second:.0f}/s", f"{result.depict_ours.events_per_second:.0f}/s",
                           ratio(result.depict_ours.events_per_second, result.depict_bare.events_per_second), "—", None))  # fmt: skip
    per_core = ratio(cpu.ours.events_per_cpu_second, cpu.bare.events_per_cpu_second)
    out.append(Row("delivery", "0 ms vendor: Commerce events per CPU second (whole worker / bare aiohttp)",
                   f"{cpu.bare.events_per_cpu_second:.0f} ({cpu.bare.cpu_us_per_request:.0f} µs/delivery)",
                   f"{cpu.ours.events_per_cpu_second:.0f} ({cpu.ours.cpu_us_per_request:.0f} µs/delivery)",
                   per_core, f">= {CPU_TARGET:.2f}x", per_core >= CPU_TARGET))  # fmt: skip
    accepted = limited.rate.requests_per_second
    limit_ok = accepted >= LIMIT_RATE_TARGET * LIMIT_RATE and limited.share_429 <= LIMIT_429_SHARE and limited.dead == 0
    out.append(Row("delivery", f"{LIMIT_RATE}/s limit (after {LIMIT_WARM_SECONDS:g} s): accepted/s; "
                   f"429 share {limited.share_429:.1%}; dead-lettered {limited.dead}", f"{LIMIT_RATE}/s allowed",
                   f"{accepted:.0f}/s", ratio(accepted, LIMIT_RATE),
                   f">= {LIMIT_RATE_TARGET:.1f}x, 429s <= {LIMIT_429_SHARE:.0%}, 0 dead", limit_ok))  # fmt: skip
    kept = ratio(slow.after.events_per_second, slow.before.events_per_second)
    out.append(Row("delivery", "Depict at 2 s: Commerce events/s (150 ms) after / before",
                   f"{slow.before.events_per_second:.0f}/s", f"{slow.after.events_per_second:.0f}/s", kept,
                   f">= {SLOW_TARGET:.1f}x", kept >= SLOW_TARGET))  # fmt: skip
    bare_seconds = drained.events / latencies[0].bare.events_per_second if latencies[0].bare.events_per_second else math.nan
    out.append(Row("delivery", f"drain {drained.events:,} Commerce events at 150 ms, one process"
                   + (" (projected: capped)" if drained.capped else ""),
                   f"{bare_seconds:.0f} s (bare's rate)", f"{drained.projected_seconds:.0f} s",
                   ratio(drained.projected_seconds, bare_seconds), "—", None))  # fmt: skip
    out.append(Row("delivery", "drain: peak RSS of the Commerce delivery process", "—", f"{drained.peak_rss_mb:.0f} MB",
                   None, f"<= {RSS_TARGET_MB:.0f} MB", drained.peak_rss_mb <= RSS_TARGET_MB))  # fmt: skip
    return out
