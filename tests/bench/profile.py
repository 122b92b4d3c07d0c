"""``python -m tests.bench.profile``: where the time goes in ``POST /collect`` and in a delivery job (cProfile).

/collect: the app in-process (Flask's test client, so no HTTP server in the
way) against a real embedded Redis; 1,000 requests of a 10-event batch
with fresh ids, after a warm-up, timed once without and once under the
profiler. Then the top functions by cumulative and by own time.

Delivery: the outboxes those requests filled are cut into jobs of
``deliveries_per_job`` deliveries, and each job is run through
``worker.jobs.forward_deliveries`` (the function RQ calls) with the
worker's runtime (vendor clients, ledger, dead letters) against the bench's
fast stand-ins. cProfile sees only the thread it runs in, so the job's
thread and the sender's event loop thread are profiled apart and added up.
RQ's own cost per job (dequeue, bookkeeping: about 20 Redis round trips) is
not in this profile.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis import Redis

from collector import create_app
from collector.config.loading import load_config
from collector.config.schema import CollectorConfig
from tests.bench import outbox
from tests.bench.payload import EVENTS_PER_BATCH, HEADERS, batch_template, event_ids, new_nonce
from tests.bench.report import heading
from tests.bench.site import write_config
from tests.bench.stack import Stack
from tests.bench.standin import NOTE, start_standins
from worker.jobs import forward_deliveries
from worker.runtime import WorkerRuntime, install

WARMUP_REQUESTS = 50
DESCRIPTION = "cProfile of POST /collect (in-process) and of delivery jobs against fast stand-ins."


def print_top(profile: cProfile.Profile, top: int, *more: cProfile.Profile) -> None:
    """The top functions of ``profile`` (and of ``more``, added in: another thread's profile of the same work)."""
    for order, title in (("cumulative", "by cumulative time"), ("tottime", "by own time (tottime)")):
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        for other in more:
            stats.add(other)
        stats.strip_dirs().sort_stats(order).print_stats(top)
        body = out.getvalue()
        print(f"\n### top {top} {title}\n")
        print(body[body.find("   ncalls"):].rstrip())


def collect_requests(config: CollectorConfig, redis_url: str, count: int) -> Callable[[], None]:
    """A function that posts ``count`` batches of fresh events to /collect in-process."""
    client = create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": redis_url}).test_client()
    template = batch_template()

    def post_all() -> None:
        nonce = new_nonce()
        for n in range(count):
            answer = client.post("/collect", data=template % event_ids(nonce, 1, n), headers=HEADERS)
            if answer.status_code != 202:
                raise RuntimeError(f"/collect answered {answer.status_code}: {answer.get_data(as_text=True)[:200]}")

    return post_all


def profile_collect(config: CollectorConfig, redis_url: str, requests: int, top: int) -> None:
    heading(f"POST /collect in-process: {requests} requests of {EVENTS_PER_BATCH} events")
    collect_requests(config, redis_url, WARMUP_REQUESTS)()
    post_all = collect_requests(config, redis_url, requests)
    started = time.perf_counter()
    post_all()
    plain = time.perf_counter() - started
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.runcall(post_all)
    profiled = time.perf_counter() - started
    print(f"without the profiler: {plain / requests * 1000:.2f} ms per request ({requests / plain:.0f} req/s, one thread)")
    print(f"under cProfile:       {profiled / requests * 1000:.2f} ms per request")
    print_top(profile, top)


def jobs_of(redis: Redis, destination: str, size: int, count: int) -> list[list[dict[str, Any]]]:
    """The first ``count`` jobs' worth of deliveries of an outbox (read, not taken)."""
    deliveries = outbox.read(redis, destination)[: size * count]
    return [deliveries[i : i + size] for i in range(0, len(deliveries), size)]


async def _in_loop_thread(call: Callable[[], None]) -> None:
    call()


def profile_delivery(config: CollectorConfig, redis: Redis, jobs_per_destination: int, top: int) -> None:
    """Jobs run as RQ runs them; cProfile sees one thread, so one profile follows the job (the main thread)
    and one the sender's event loop thread, and the tables add both."""
    policy = config.settings.delivery
    runtime = WorkerRuntime.start(config, redis)
    install(runtime)
    try:
        for destination in ("depict", "commerce"):
            jobs = jobs_of(redis, destination, policy.deliveries_per_job, jobs_per_destination)
            deliveries = sum(len(job) for job in jobs)
            heading(f"delivery jobs: {len(jobs)} {destination} jobs, {deliveries} deliveries "
                    f"(up to {policy.concurrency} in flight)")  # fmt: skip
            job_thread, loop_thread = cProfile.Profile(), cProfile.Profile()
            runtime.sender._run(_in_loop_thread(loop_thread.enable))
            started = time.perf_counter()
            for job in jobs:
                summary = job_thread.runcall(forward_deliveries, job)
                if summary.get("delivered") != len(job):
                    print(f"  ! a job did not deliver everything: {summary}")
            took = time.perf_counter() - started
            runtime.sender._run(_in_loop_thread(loop_thread.disable))
            print(f"under cProfile: {took / deliveries * 1000:.2f} ms per delivery")
            print_top(job_thread, top, loop_thread)
    finally:
        install(None)
        runtime.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.profile", description=DESCRIPTION)
    parser.add_argument("--requests", type=int, default=1000, help="/collect requests to profile (default 1000)")
    parser.add_argument("--jobs", type=int, default=4, help="delivery jobs per destination to profile (default 4)")
    parser.add_argument("--top", type=int, default=25, help="functions to list per table (default 25)")
    args = parser.parse_args(argv)
    print(f"# Profiles of the hot paths (cProfile). {NOTE}.")
    with Stack("profile") as stack:
        redis_server = stack.redis()
        standins = start_standins(stack)
        config = load_config(write_config(stack.dir / "collector.toml", standins.depict_url, standins.commerce_url))
        profile_collect(config, redis_server.url, args.requests, args.top)
        profile_delivery(config, Redis.from_url(redis_server.url), args.jobs, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
