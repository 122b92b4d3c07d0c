"""Footprint: Redis memory per queued event (vs one RQ job per event), and the processes' memory after load.

Redis: ``INFO memory``'s ``used_memory`` before and after queueing N events
through ``POST /collect`` (10-event batches) with no worker running, divided
by N, ``before`` being taken after a warm-up (so that the gunicorn
workers' connections and their buffers in Redis are not counted as the
events'). That covers everything an event leaves in Redis until it is
delivered: its dedupe marker (with its TTL), its share of the Depict array
and its own Commerce delivery in the outboxes. The baseline is the design
the outbox replaced (``docs/architecture.md``): one RQ job per event, N
trivial jobs each carrying one event (JSON serializer, as the worker's
queues), enqueued in another database of the same server and divided by N.
Target: < 600 bytes per event.

Processes: RSS and USS (memory no other process shares: for gunicorn's
forked workers, what each one really adds) of the collector's gunicorn
master and workers after they took those requests, and of the ``collector
worker`` supervisor and its children after they delivered those events to
the bench stand-ins.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import psutil
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from tests.bench.loadgen import send_batches
from tests.bench.payload import EVENTS_PER_BATCH, batch, event_ids, new_nonce
from tests.bench.report import Row, heading, ratio, table
from tests.bench.site import write_config
from tests.bench.stack import Service, Stack, serve_workers, wait_until
from tests.bench.standin import start_standins

TARGET_BYTES_PER_EVENT = 600
RQ_BASELINE_DB = 1
RQ_BASELINE_QUEUE = "bench-one-job-per-event"
RQ_BASELINE_FUNCTION = "tests.bench.footprint.deliver_one_event"  # never run: the jobs are only measured
ENQUEUE_CHUNK = 500
WARMUP_BATCHES = 100
AFTER_DELIVERY_SECONDS = 1.0  # the last jobs record their deliveries after the vendors answered
DELIVERY_TIMEOUT_SECONDS = 180
MB = 1024 * 1024
GUNICORN_ROLES = "gunicorn: the parent is its master, the children its sync workers."
WORKER_ROLES = (
    "collector worker: the parent is the supervisor (it runs the dispatcher thread), the children one delivery "
    "process per destination and multiprocessing's resource tracker, the grandchildren the RQ scheduler process "
    "of each delivery process."
)


def _role(process: psutil.Process, root: psutil.Process) -> str:
    if process.pid == root.pid:
        return "parent"
    command = " ".join(process.cmdline())
    if "resource_tracker" in command:
        return "multiprocessing resource tracker"
    return "child" if process.ppid() == root.pid else "grandchild"


def rss_rows(services: Mapping[str, Service]) -> list[list[str]]:
    rows = []
    for label, service in services.items():
        processes = service.processes()
        for process in processes:
            try:
                memory = process.memory_full_info()
                role = _role(process, processes[0])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rows.append([label, role, str(process.pid), f"{memory.rss / MB:.1f}", f"{memory.uss / MB:.1f}"])
    return rows


def print_rss(services: Mapping[str, Service]) -> None:
    print(table(["processes", "role", "pid", "RSS MB", "USS MB"], rss_rows(services)))


def used_memory(redis: Redis) -> int:
    return int(redis.info("memory")["used_memory"])


def collector_bytes_per_event(redis: Redis, collector_url: str, events: int) -> tuple[float, int]:
    """Queue ``events`` through /collect; Redis bytes per accepted event, and how many were accepted.

    A warm-up first has every gunicorn worker connect and size its buffers in Redis, so that the
    figure holds what the events take, not the clients' fixed cost."""
    url = collector_url + "/collect"
    send_batches(url, WARMUP_BATCHES)
    before = used_memory(redis)
    result = send_batches(url, events // EVENTS_PER_BATCH)
    accepted = result.ok * EVENTS_PER_BATCH
    return (used_memory(redis) - before) / max(accepted, 1), accepted


def rq_job_bytes_per_event(redis_url: str, events: int) -> float:
    """Enqueue ``events`` RQ jobs of one event each in another database; bytes per job. Empties it after."""
    redis = Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{RQ_BASELINE_DB}")
    queue = Queue(RQ_BASELINE_QUEUE, connection=redis, serializer=JSONSerializer)
    nonce = new_nonce()
    queue.enqueue(RQ_BASELINE_FUNCTION, "warm-up")  # the queue's own keys are not per event
    before = used_memory(redis)
    for start in range(0, events, ENQUEUE_CHUNK):
        ids = event_ids(nonce, 1, start, size=min(ENQUEUE_CHUNK, events - start))
        jobs = [Queue.prepare_data(RQ_BASELINE_FUNCTION, args=(event,)) for event in batch(list(ids))["events"]]
        with redis.pipeline() as pipe:
            queue.enqueue_many(jobs, pipeline=pipe)
            pipe.execute()
    per_event = (used_memory(redis) - before) / events
    redis.flushdb()
    return per_event


def key_groups(redis: Redis) -> dict[str, int]:
    """Keys per prefix (the first two ``:``-separated parts), most first."""
    groups: dict[str, int] = {}
    for key in redis.scan_iter(count=1000):
        prefix = ":".join(key.decode(errors="replace").split(":")[:2])
        groups[prefix] = groups.get(prefix, 0) + 1
    return dict(sorted(groups.items(), key=lambda item: -item[1]))


def print_left_after_delivery(redis: Redis, empty: int, events: int) -> None:
    """What delivered events still hold in Redis: dedupe markers and delivery ledger (for the dedupe window),
    finished RQ jobs (for their result TTL)."""
    per_event = (used_memory(redis) - empty) / events
    groups = ", ".join(f"{prefix} {count}" for prefix, count in list(key_groups(redis).items())[:6])
    print(f"still in Redis once all {events} were delivered: {per_event:.0f} bytes per event (keys: {groups})")


def run(quick: bool = False) -> list[Row]:
    events = 2_000 if quick else 10_000
    heading("4. Footprint: Redis memory per queued event, process memory after load")
    with Stack("footprint") as stack:
        redis_server = stack.redis()
        redis = Redis.from_url(redis_server.url)
        standins = start_standins(stack)
        config = write_config(stack.dir / "collector.toml", standins.depict_url, standins.commerce_url)
        collector, collector_url = stack.collector(config, redis_server.url, serve_workers())

        empty = used_memory(redis)
        ours, accepted = collector_bytes_per_event(redis, collector_url, events)
        queued = accepted + WARMUP_BATCHES * EVENTS_PER_BATCH
        baseline = rq_job_bytes_per_event(redis_server.url, events)
        print(f"Redis used_memory per queued event ({accepted} events through /collect, no worker): {ours:.0f} bytes")
        print(f"baseline, one RQ job per event ({events} jobs of one event, JSON serializer): {baseline:.0f} bytes")

        standins.receipts.reset()
        started = time.monotonic()
        worker = stack.worker(config, redis_server.url)
        wait_until(
            lambda: min(standins.receipts.count("depict"), standins.receipts.count("commerce")) >= queued,
            DELIVERY_TIMEOUT_SECONDS,
            f"the worker delivering {queued} events",
        )
        print(f"the worker delivered them (and the warm-up's) in {time.monotonic() - started:.1f} s (including its start)")
        time.sleep(AFTER_DELIVERY_SECONDS)
        print_left_after_delivery(redis, empty, queued)
        print("\nRSS after the load (collector: after queueing them; worker: after delivering them):")
        print_rss({"collector serve (gunicorn)": collector, "collector worker": worker})
        print(GUNICORN_ROLES, WORKER_ROLES, sep="\n")
    return [
        Row("footprint", "Redis bytes per queued event", f"{baseline:.0f} B (RQ job/event)", f"{ours:.0f} B",
            ratio(ours, baseline), f"< {TARGET_BYTES_PER_EVENT} B", ours < TARGET_BYTES_PER_EVENT),
    ]  # fmt: skip
