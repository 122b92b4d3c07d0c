"""``python -m tests.bench.ingest_profile``: where a ``POST /collect`` request's time goes, part by part, vs the floor's.

1. In-process, per part: the collector app and the floor app (``floor.py``)
   each take the same 10-event batches with fresh ids through Flask's test
   client, against one embedded Redis, with ``PROMETHEUS_MULTIPROC_DIR`` set
   as ``collector serve`` sets it (multiprocess counters write to mmap'ed
   files). The collector's functions along the path are wrapped with
   timers, looked up where ``/collect`` calls them (``collector.inbound.collect``,
   ``collector.inbound.intake``, ``collector.storage.outbox``), and the request's remaining
   time is Flask and Werkzeug (routing, request and response objects, the
   test client's environ). A wrapper that no longer finds its function
   (the code moved) is listed as missing, not an error. Each part's
   microseconds per request, its share, and the floor's parts. Timer
   overhead: about 0.3 µs per wrapped call.
2. Under load, per request: both apps under gunicorn with ``collector
   serve``'s settings, wrk at 8 connections, alternating (floor, /collect,
   floor, /collect); CPU of the gunicorn workers (``/proc``), of
   redis-server (its main thread, ``INFO cpu``) and of wrk per answered
   request, and the requests/s. On 2 cores the CPU per request decides the
   ratio of requests/s.

It asserts nothing. ``--requests`` sets 1.'s count, ``--seconds`` 2.'s run length.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# as `collector serve` does, before prometheus_client is imported anywhere (removed on the way out)
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-ingest-profile-metrics-")
    atexit.register(shutil.rmtree, os.environ["PROMETHEUS_MULTIPROC_DIR"], True)

import argparse
import importlib
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import psutil
from redis import Redis

from tests.bench.loadgen import timed_load
from tests.bench.payload import (
    EVENTS_PER_BATCH,
    HEADERS,
    batch_template,
    event_ids,
    new_nonce,
)
from tests.bench.redis_capacity import Meter, Usage, descendants, snapshot
from tests.bench.report import heading, table
from tests.bench.site import SITE, write_config
from tests.bench.stack import Stack, serve_workers
from tests.bench.standin import start_standins

WARMUP_REQUESTS = 100
CONNECTIONS = 8

# (label, module, attribute, part): the functions /collect calls, where it looks them up. A part's time includes the
# time of the parts nested in it; "self" rows subtract them.
COLLECT_PARTS = [
    ("read_body", "collector.inbound.collect", "read_body", "body read/parse"),
    ("parse_json", "collector.inbound.collect", "parse_json", "body read/parse"),
    ("load_envelope", "collector.inbound.collect", "load_envelope", "body read/parse"),
    ("may_hold_lone_surrogates", "collector.inbound.collect", "may_hold_lone_surrogates", "validation"),
    ("check_batch (schema + Account fields)", "collector.inbound.collect", "check_batch", "validation"),
    ("without_repeats", "collector.inbound.collect", "without_repeats", "validation"),
    ("check_web_event_budget", "collector.inbound.collect", "check_web_event_budget", "validation"),
    ("context_from_request (IP, UA, visitor id)", "collector.inbound.collect", "context_from_request", "enrichment"),
    ("queue_batch (all of it)", "collector.inbound.collect", "queue_batch", None),
    ("build_deliveries (both vendors' mapping)", "collector.inbound.intake", "build_deliveries", None),
    ("to_depict_event (x events)", "collector.mapping.routing", "to_depict_event", "mapping"),
    ("to_web_event (x events)", "collector.mapping.routing", "to_web_event", "mapping"),
    ("depict_delivery_id", "collector.mapping.routing", "depict_delivery_id", "mapping"),
    ("tail_entry (live tail text)", "collector.inbound.intake", "tail_entry", "enqueue (script, dedupe, live tail)"),
    ("Outbox.try_enqueue (all of it)", "collector.storage.outbox", "Outbox.try_enqueue", None),
    ("encode_entry (orjson + zlib)", "collector.storage.outbox", "encode_entry", "enqueue (script, dedupe, live tail)"),
    ("dedupe.fingerprint", "collector.storage.dedupe", "fingerprint", "enqueue (script, dedupe, live tail)"),
    ("GenerationShards.past", "collector.storage.dedupe", "GenerationShards.past", "enqueue (script, dedupe, live tail)"),
    ("redis-py packing the command", "redis.connection", "PythonRespSerializer.pack", "enqueue (script, dedupe, live tail)"),
    ("redis-py sending it (sendall: the kernel's loopback TCP)", "redis.connection", "AbstractConnection.send_packed_command",
     "enqueue (script, dedupe, live tail)"),
    ("redis-py read_response", "redis.connection", "AbstractConnection.read_response",
     "enqueue (script, dedupe, live tail)"),
    ("count_outcome (4 counters)", "collector.inbound.collect", "count_outcome", "metrics"),
    ("jsonify", "collector.inbound.collect", "jsonify", "response/cookie"),
    ("_set_visitor_cookie", "collector.inbound.collect", "_set_visitor_cookie", "response/cookie"),
]
SCRIPT_LABEL = "the enqueue script's round trip (EVALSHA: send, Redis runs it, answer)"
NESTED = {
    "queue_batch (all of it)": ["build_deliveries (both vendors' mapping)", "tail_entry (live tail text)",
                                "Outbox.try_enqueue (all of it)"],
    "Outbox.try_enqueue (all of it)": ["encode_entry (orjson + zlib)", "dedupe.fingerprint", "GenerationShards.past",
                                       SCRIPT_LABEL],
    "build_deliveries (both vendors' mapping)": ["to_depict_event (x events)", "to_web_event (x events)",
                                                 "depict_delivery_id"],
    SCRIPT_LABEL: ["redis-py packing the command", "redis-py sending it (sendall: the kernel's loopback TCP)",
                   "redis-py read_response"],
}  # fmt: skip
SELF_PART = {"queue_batch (all of it)": "enqueue (script, dedupe, live tail)",
             "Outbox.try_enqueue (all of it)": "enqueue (script, dedupe, live tail)",
             "build_deliveries (both vendors' mapping)": "mapping",
             SCRIPT_LABEL: "enqueue (script, dedupe, live tail)"}  # fmt: skip


class Timers:
    """Wall-clock and CPU (this thread's) seconds per label."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        seconds, cpu, calls, clock, cpu_clock = self.seconds, self.cpu, self.calls, time.perf_counter, time.thread_time

        def timed(*args: Any, **kwargs: Any) -> Any:
            started, cpu_started = clock(), cpu_clock()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[label] += clock() - started
                cpu[label] += cpu_clock() - cpu_started
                calls[label] += 1

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.cpu.clear()
        self.calls.clear()

    def per_request(self, requests: int) -> dict[str, tuple[float, float]]:
        return {label: (self.seconds[label] / requests, self.cpu[label] / requests) for label in self.seconds}


def install(timers: Timers) -> list[str]:
    """Wrap the parts where /collect looks them up; the labels not found."""
    missing = []
    for label, module_name, attribute, _ in COLLECT_PARTS:
        try:
            owner: Any = importlib.import_module(module_name)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            setattr(owner, name, timers.wrap(label, getattr(owner, name)))
        except (ImportError, AttributeError):
            missing.append(label)
    return missing


def hook_name(hook: Any) -> str:
    return getattr(getattr(hook, "func", hook), "__qualname__", repr(hook))


def wrap_hooks(app: Any, timers: Timers) -> None:
    """before_request (flask-limiter's check) and after_request hooks (CORS, counting answers, ...), each timed."""
    for hooks in app.before_request_funcs.values():
        hooks[:] = [timers.wrap(f"before_request {hook_name(f)}", f) for f in hooks]
    for hooks in app.after_request_funcs.values():
        hooks[:] = [timers.wrap(f"after_request {hook_name(f)}", f) for f in hooks]


def part_of(label: str) -> str:
    if label.startswith(("before_request", "after_request")) and "Limiter" in label:
        return "limiter"
    if label.startswith("after_request") and "count_answer" in label:
        return "metrics"
    if label.startswith("after_request"):
        return "response/cookie"
    if label.startswith("before_request"):
        return "other hooks"
    if label == SCRIPT_LABEL:
        return "enqueue (script, dedupe, live tail)"
    for known, _, _, part in COLLECT_PARTS:
        if known == label:
            return part or "?"
    return "?"


def post_many(client: Any, count: int, path: str = "/collect") -> float:
    template, nonce = batch_template(), new_nonce()
    started = time.perf_counter()
    for n in range(count):
        answer = client.post(path, data=template % event_ids(nonce, 1, n), headers=HEADERS)
        if answer.status_code != 202:
            raise RuntimeError(f"{path} answered {answer.status_code}: {answer.get_data(as_text=True)[:200]}")
    return time.perf_counter() - started


def total_timer(app: Any, timers: Timers) -> None:
    app.wsgi_app = timers.wrap("whole request (WSGI app)", app.wsgi_app)


def profile_collect(config_path: Any, redis_url: str, requests: int) -> tuple[float, dict[str, tuple[float, float]], list[str]]:
    from collector import create_app
    from collector.config.loading import load_config
    from collector.extensions import collector_state

    timers = Timers()
    missing = install(timers)
    app = create_app({"COLLECTOR_CONFIG": load_config(config_path), "REDIS_URL": redis_url})
    with app.app_context():
        outbox = collector_state().outbox
        outbox._run = timers.wrap(SCRIPT_LABEL, outbox._run)
    wrap_hooks(app, timers)
    total_timer(app, timers)
    client = app.test_client()
    post_many(client, WARMUP_REQUESTS)
    timers.reset()
    wall = post_many(client, requests)
    return wall, timers.per_request(requests), missing


def profile_floor(redis_url: str, requests: int) -> tuple[float, dict[str, tuple[float, float]]]:
    os.environ["REDIS_URL"] = redis_url
    floor = importlib.import_module("tests.bench.floor")
    timers = Timers()
    floor.json.loads = timers.wrap("json.loads", json.loads)  # the floor's module sees json through its attribute
    redis = floor._redis()
    redis.rpush = timers.wrap("RPUSH round trip", redis.rpush)
    total_timer(floor.app, timers)
    client = floor.app.test_client()
    post_many(client, WARMUP_REQUESTS)
    timers.reset()
    wall = post_many(client, requests)
    redis.delete(floor.FLOOR_LIST)
    floor.json.loads = json.loads
    return wall, timers.per_request(requests)


WHOLE = "whole request (WSGI app)"
REST = "Flask/Werkzeug and the rest (routing, request/response objects, test client)"


def by_part(per_request: dict[str, tuple[float, float]], which: int) -> dict[str, float]:
    """µs per request by part (``which``: 0 wall-clock, 1 CPU), nested rows counted once, the rest as REST."""
    parts: dict[str, float] = defaultdict(float)
    for label, figures in per_request.items():
        if label == WHOLE:
            continue
        nested = sum(per_request.get(child, (0.0, 0.0))[which] for child in NESTED.get(label, []))
        parts[SELF_PART.get(label) or part_of(label)] += figures[which] - nested
    parts[REST] = per_request[WHOLE][which] - sum(parts.values())
    return {part: seconds * 1e6 for part, seconds in parts.items()}


def print_parts(per_request: dict[str, tuple[float, float]], missing: list[str]) -> None:
    """Each timed function: wall-clock and CPU µs per request."""
    total = per_request[WHOLE][0]
    rows = []
    for label, (seconds, cpu) in sorted(per_request.items(), key=lambda item: -item[1][0]):
        nested = [per_request.get(child, (0.0, 0.0)) for child in NESTED.get(label, [])]
        own = f"{(seconds - sum(n[0] for n in nested)) * 1e6:.0f} / {(cpu - sum(n[1] for n in nested)) * 1e6:.0f}" if nested else ""
        part = f"self: {SELF_PART[label]}" if label in SELF_PART else "" if label == WHOLE else part_of(label)
        rows.append([label, f"{seconds * 1e6:.0f}", f"{cpu * 1e6:.0f}", own, f"{seconds / total:.0%}", part])
    print(table(["function (where /collect looks it up)", "wall µs", "CPU µs", "less nested rows: wall / CPU", "share of wall",
                 "part"], rows))  # fmt: skip
    if missing:
        print(f"(not found, so not timed: {', '.join(missing)})")


def under_load(stack: Stack, config_path: Any, redis_url: str, seconds: float, rounds: int) -> None:
    workers = serve_workers()
    redis = Redis.from_url(redis_url)
    collector, collector_url = stack.collector(config_path, redis_url, workers)
    floor, floor_url = stack.gunicorn("floor", "tests.bench.floor:app", workers, REDIS_URL=redis_url)
    redis_process = psutil.Process(int(redis.info("server")["process_id"]))
    apps = {"floor": (floor, floor_url + "/collect"), "/collect": (collector, collector_url + "/collect")}
    for _, url in apps.values():
        timed_load(url, CONNECTIONS, 2)
    figures: dict[str, list[tuple[float, float, float, float, int]]] = defaultdict(list)
    for _ in range(rounds):
        for name, (service, url) in apps.items():
            meter = Meter.begin({"gunicorn": descendants(service), "redis": [redis_process]})
            before = snapshot(redis)
            load = timed_load(url, CONNECTIONS, seconds)
            time.sleep(0.3)
            usage, cpu = Usage.between(before, snapshot(redis)), meter.end()
            figures[name].append((load.rps, cpu["gunicorn"], usage.core, cpu["wrk"], load.ok))
            redis.delete("bench:floor", f"collector:outbox:{SITE}:depict", f"collector:outbox:{SITE}:commerce")
    rows = []
    per: dict[str, dict[str, float]] = {}
    for name, runs in figures.items():
        ok = sum(run[4] for run in runs)
        per[name] = {"gunicorn": sum(r[1] for r in runs) / ok * 1e6, "redis": sum(r[2] for r in runs) / ok * 1e6,
                     "wrk": sum(r[3] for r in runs) / ok * 1e6, "rps": sum(r[0] for r in runs) / len(runs)}  # fmt: skip
        total = per[name]["gunicorn"] + per[name]["redis"] + per[name]["wrk"]
        rows.append([name, f"{per[name]['rps']:.0f}", f"{per[name]['gunicorn']:.0f}", f"{per[name]['redis']:.0f}",
                     f"{per[name]['wrk']:.0f}", f"{total:.0f}"])  # fmt: skip
    print(table(["app", "req/s", "gunicorn workers µs CPU/request", "redis main thread µs", "wrk µs", "together µs"], rows))
    floor_total = sum(per["floor"][k] for k in ("gunicorn", "redis", "wrk"))
    ours_total = sum(per["/collect"][k] for k in ("gunicorn", "redis", "wrk"))
    print(f"/collect / floor: req/s {per['/collect']['rps'] / per['floor']['rps']:.2f}; CPU per request "
          f"{ours_total / floor_total:.2f}x the floor's. For 0.5 of the floor's req/s on these cores, /collect may use about "
          f"2x the floor's CPU per request: {2 * floor_total:.0f} µs in all, {2 * floor_total - per['/collect']['redis'] - per['/collect']['wrk']:.0f} "
          f"µs of it in gunicorn at today's Redis and wrk share (now {per['/collect']['gunicorn']:.0f}).")  # fmt: skip
    collector.stop()
    for process in [floor]:
        process.stop()


# 3. py-spy on the collector's gunicorn workers under load: each sample goes to the innermost frame of the path it knows

SPY_PARTS = [  # (substring of a "function (file:line)" frame, part), checked from the leaf up: the first match wins
    ("_check_request_limit", "limiter"),
    ("__inject_headers", "limiter"),
    ("build_deliveries", "mapping"),
    ("tail_entry", "enqueue (script, dedupe, live tail)"),
    ("try_enqueue", "enqueue (script, dedupe, live tail)"),
    ("queue_batch", "enqueue (script, dedupe, live tail)"),
    ("check_batch", "validation"),
    ("check_web_event_budget", "validation"),
    ("without_repeats", "validation"),
    ("may_hold_lone_surrogates", "validation"),
    ("context_from_request", "enrichment"),
    ("read_body", "body read/parse"),
    ("parse_json", "body read/parse"),
    ("load_envelope", "body read/parse"),
    ("count_outcome", "metrics"),
    ("_count_answer", "metrics"),
    ("observe (prometheus_client", "metrics"),
    ("jsonify", "response/cookie"),
    ("_set_visitor_cookie", "response/cookie"),
    ("allow_site_origin", "response/cookie"),
    ("wsgi_app (flask", "Flask/Werkzeug (the rest of the app)"),
    ("handle_request (gunicorn", "gunicorn: HTTP parse, WSGI environ, writing the answer"),
    ("accept (gunicorn", "gunicorn: accept, the worker loop"),
    ("run_for_one (gunicorn", "gunicorn: accept, the worker loop"),
    ("handle (gunicorn", "gunicorn: HTTP parse, WSGI environ, writing the answer"),
]


def classify(stack_line: str) -> str:
    frames = stack_line.split(";")
    for frame in reversed(frames):
        for needle, part in SPY_PARTS:
            if needle in frame:
                return part
    return "other (outside a request: worker loop, notify, GC)"


def spy(stack: Stack, config_path: Any, redis_url: str, seconds: float) -> None:
    import subprocess

    if not shutil.which("py-spy"):
        print("py-spy is not on PATH (pip install py-spy)")
        return
    collector, url = stack.collector(config_path, redis_url, serve_workers())
    timed_load(url + "/collect", CONNECTIONS, 2)
    output = stack.dir / "py-spy.txt"
    argv = ["py-spy", "record", "--pid", str(collector.pid), "--subprocesses", "--nonblocking", "--rate", "200",
            "--gil", "--format", "raw", "--output", str(output), "--duration", str(int(seconds))]  # fmt: skip
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    load = timed_load(url + "/collect", CONNECTIONS, seconds + 2)
    _, errors = recorder.communicate(timeout=seconds + 60)
    collector.stop()
    if not output.exists():
        print(f"py-spy wrote nothing: {errors.decode(errors='replace')[-500:]}")
        return
    samples: dict[str, int] = defaultdict(int)
    for line in output.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if stack_text and count.isdigit():
            samples[classify(stack_text)] += int(count)
    total = sum(samples.values())
    cpu_per_request = None
    print(f"{total} samples of the gunicorn workers at 200/s while wrk ran at {CONNECTIONS} connections: "
          f"{load.rps:.0f} req/s ({load.ok} requests)")  # fmt: skip
    rows = [[part, count, f"{count / total:.0%}", f"{count / 200 / load.ok * 1e6 * (load.seconds / (seconds + 2)):.0f}"]
            for part, count in sorted(samples.items(), key=lambda item: -item[1])]  # fmt: skip
    print(table(["part", "samples", "share", "µs per request (samples / rate / requests)"], rows))
    print("py-spy --gil: only samples of a thread holding the GIL (running Python, or about to), so waiting for Redis "
          "does not count; under load on 2 cores the µs are inflated by the sharing (and by py-spy itself); the shares "
          "are the figure to read.")  # fmt: skip
    del cpu_per_request


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.ingest_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="in-process requests per app (default 2000)")
    parser.add_argument("--seconds", type=float, default=5, help="each load run (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="load rounds per app (default 2)")
    parser.add_argument("--no-load", action="store_true", help="in-process parts only")
    parser.add_argument("--py-spy", type=float, default=0, metavar="SECONDS",
                        help="also sample the collector's gunicorn workers with py-spy under load for SECONDS")  # fmt: skip
    args = parser.parse_args(argv)
    with Stack("ingest-profile") as stack:
        server = stack.redis()
        standins = start_standins(stack)
        config_path = write_config(stack.dir / "collector.toml", standins.depict_url, standins.commerce_url)
        heading(f"1. In-process, µs per request ({args.requests} requests of {EVENTS_PER_BATCH} events, fresh ids)")
        floor_wall, floor = profile_floor(server.url, args.requests)
        wall, ours, missing = profile_collect(config_path, server.url, args.requests)
        print(f"/collect: {wall / args.requests * 1e6:.0f} µs per request with the timers and the test client; floor: "
              f"{floor_wall / args.requests * 1e6:.0f} µs\n")  # fmt: skip
        print_parts(ours, missing)
        print("\nby part, /collect against the floor (µs per request; CPU = the Python process's own, without Redis's):")
        floor_parts = {wall_or_cpu: {"body read/parse": floor.get("json.loads", (0, 0))[wall_or_cpu] * 1e6,
                                     "enqueue (script, dedupe, live tail)": floor.get("RPUSH round trip", (0, 0))[wall_or_cpu] * 1e6}
                       for wall_or_cpu in (0, 1)}  # fmt: skip
        for which in (0, 1):
            floor_parts[which][REST] = floor[WHOLE][which] * 1e6 - sum(floor_parts[which].values())
        wall_parts, cpu_parts = by_part(ours, 0), by_part(ours, 1)
        rows = [[part, f"{wall_parts[part]:.0f}", f"{floor_parts[0].get(part, 0):.0f}", f"{cpu_parts[part]:.0f}",
                 f"{floor_parts[1].get(part, 0):.0f}", f"{cpu_parts[part] - floor_parts[1].get(part, 0):.0f}"]
                for part in sorted(wall_parts, key=lambda p: -wall_parts[p])]  # fmt: skip
        rows.append(["= whole request", f"{ours[WHOLE][0] * 1e6:.0f}", f"{floor[WHOLE][0] * 1e6:.0f}",
                     f"{ours[WHOLE][1] * 1e6:.0f}", f"{floor[WHOLE][1] * 1e6:.0f}",
                     f"{(ours[WHOLE][1] - floor[WHOLE][1]) * 1e6:.0f}"])  # fmt: skip
        print(table(["part", "/collect wall", "floor wall", "/collect CPU", "floor CPU", "CPU difference"], rows))
        print("floor: body read/parse = json.loads (its get_data is in the rest); enqueue = its one RPUSH round trip. "
              "Wall includes waiting for Redis (a round trip, and Redis running the script on the same cores).")  # fmt: skip
        if not args.no_load:
            heading(f"2. Under load: CPU per request, gunicorn ({serve_workers()} sync workers each), wrk at "
                    f"{CONNECTIONS} connections, {args.rounds} x {args.seconds:g} s per app, alternating")  # fmt: skip
            under_load(stack, config_path, server.url, args.seconds, args.rounds)
        if args.py_spy:
            heading(f"3. py-spy: the collector's gunicorn workers under wrk at {CONNECTIONS} connections, {args.py_spy:g} s")
            spy(stack, config_path, server.url, args.py_spy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
