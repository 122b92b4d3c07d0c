"""Footprint: Redis memory per delivered event-day, what a vendor outage costs, per queued event; process memory.

All on one embedded Redis, with ``collector serve``, ``collector worker`` and
the bench's vendor stand-ins (Depict and Commerce) running.

1. Queued (context, no target): ``INFO memory``'s ``used_memory`` before and
   after queueing N events through ``POST /collect`` (10-event batches)
   with no worker running, divided by N (``before`` taken after a warm-up,
   so that the gunicorn workers' connections are not counted), next to one
   RQ job per event (the design the outbox replaced, ``docs/architecture.md``:
   N trivial one-event jobs, JSON serializer, in another database). Also
   each outbox's own ``MEMORY USAGE`` per event.
2. Per delivered event-day (target <= 40 B): the worker delivers to both
   vendors; then, at two volumes V1 < V2 (V2 = 4 x V1) of events sent and
   delivered, every key of the Redis is read with ``MEMORY USAGE key
   SAMPLES 0`` and ``PTTL``, and its bytes are weighted by the share of a
   day its TTL keeps it (TTL 4 h: 4/24 of its bytes; the dedupe shards of
   ``collector/storage/dedupe.py``, per-site sets of fingerprints in 4-hour
   generations, by how long each will live, 24 to 28 h, so a little more
   than their bytes; a key without TTL counts fully). Before each volume the
   site's dedupe shards are removed and the previous generation's count
   (``collector:seen-meta:<site>``, ``<generation - 1>:n``) set to the
   volume, so that the collector lays the current generation out as it does
   in production when a generation takes what the one before took (shards
   filled as ``dedupe.shard_bits_for`` plans them), not as a site's first
   generation. The row shows the marginal figure, (weighted bytes at V2 -
   at V1) / (V2 - V1), the cost per event at scale where the fixed costs
   (RQ's registries and worker keys, the delivery stats, the live tail) are
   amortised; the average at V2, fixed costs included, is printed with it.
   Baseline: a key per event id with the 24-hour TTL (``SET id "" EX 86400
   NX``, the dedupe design ``dedupe.py`` replaced), V2 of them in another
   database, ``used_memory`` per key.
3. A one-hour outage of one vendor at 1,000 events/s (target < 1 GiB): the
   Commerce stand-in answers 503 (Commerce takes one delivery per event, the
   bigger backlog; Depict a tenth as many), the worker keeps running (its
   breaker opens and puts the deliveries back in the outbox, where the
   backlog waits), N events are sent and the Depict ones delivered; once
   every Commerce delivery waits in the outbox, the growth of every key's
   ``MEMORY USAGE``, divided by N, is the bytes per queued event (or
   ``used_memory``'s growth, if larger), leaving out the dedupe shards
   (there with or without an outage) and keys that expire within 10
   minutes (the ledgers of the failed jobs, which do not pile up over an
   hour); times 3.6 M. Baseline: one RQ job per event from 1., times 3.6 M.

Processes: RSS and USS (memory no other process shares: for gunicorn's
forked workers, what each one really adds) of the collector's gunicorn
master and workers, and of the ``collector worker`` supervisor and its
children, after the load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psutil
from redis import Redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from collector.config.defaults import DESTINATIONS
from collector.storage import dedupe
from collector.storage.outbox import outbox_key
from tests.bench import outbox
from tests.bench.loadgen import send_batches
from tests.bench.payload import EVENTS_PER_BATCH, batch, event_ids, new_nonce
from tests.bench.report import Row, heading, ratio, table
from tests.bench.site import SITE, write_config
from tests.bench.stack import Service, Stack, serve_workers, wait_until
from tests.bench.standin import StandIns, start_standins

TARGET_BYTES_PER_EVENT_DAY = 40
TARGET_OUTAGE_BYTES = 1024**3  # < 1 GiB
OUTAGE_RATE = 1_000  # events/s
OUTAGE_SECONDS = 3600
DOWN_VENDOR = "commerce"  # one delivery per event: the bigger backlog
DAY_SECONDS = 86400
NAIVE_DEDUPE_DB = 2
SETTLE_POLL_SECONDS = 0.5
TRANSIENT_TTL_SECONDS = 600  # a key that expires this soon does not pile up over an hour's outage
GiB = 1024**3
RQ_BASELINE_DB = 1
RQ_BASELINE_QUEUE = "bench-one-job-per-event"
RQ_BASELINE_FUNCTION = "tests.bench.footprint.deliver_one_event"  # never run: the jobs are only measured
ENQUEUE_CHUNK = 500
WARMUP_BATCHES = 100
AFTER_DELIVERY_SECONDS = 1.0  # the last jobs record their deliveries after the vendors answered
DELIVERY_TIMEOUT_SECONDS = 180


@dataclass(frozen=True)
class Plan:
    queued: int  # events for 1.
    volumes: tuple[int, int]  # events for 2.
    outage: int  # events for 3.


FULL = Plan(queued=10_000, volumes=(4_000, 16_000), outage=10_000)
QUICK = Plan(queued=2_000, volumes=(1_000, 4_000), outage=2_000)
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


# every key's memory, weighted by its TTL


@dataclass(frozen=True)
class KeyMemory:
    bytes: int
    ttl_seconds: float | None  # None: no TTL

    @property
    def day_share(self) -> float:
        """The share of a day this key's bytes are kept: TTL / 24 h (more than 1 beyond a day), 1 without TTL."""
        return 1.0 if self.ttl_seconds is None else self.ttl_seconds / DAY_SECONDS


def group_of(key: str) -> str:
    """What a key is, for the tables: its prefix (the first two ``:``-separated parts)."""
    return ":".join(key.split(":")[:2])


def key_memory(redis: Redis, chunk: int = 500) -> dict[str, KeyMemory]:
    """``MEMORY USAGE key SAMPLES 0`` and ``PTTL`` of every key of the database."""
    keys = [key.decode(errors="replace") for key in redis.scan_iter(count=1000)]
    found: dict[str, KeyMemory] = {}
    for start in range(0, len(keys), chunk):
        part = keys[start : start + chunk]
        with redis.pipeline(transaction=False) as pipe:
            for key in part:
                pipe.memory_usage(key, samples=0)
                pipe.pttl(key)
            answers = pipe.execute()
        for key, size, pttl in zip(part, answers[::2], answers[1::2]):
            if size is None or pttl == -2:  # gone meanwhile
                continue
            found[key] = KeyMemory(int(size), None if pttl == -1 else pttl / 1000)
    return found


def weighted_bytes(keys: Mapping[str, KeyMemory]) -> float:
    return sum(memory.bytes * memory.day_share for memory in keys.values())


def by_group(keys: Mapping[str, KeyMemory]) -> dict[str, list[KeyMemory]]:
    groups: dict[str, list[KeyMemory]] = {}
    for key, memory in keys.items():
        groups.setdefault(group_of(key), []).append(memory)
    return dict(sorted(groups.items(), key=lambda item: -sum(m.bytes * m.day_share for m in item[1])))


def is_dedupe(group: str) -> bool:
    return group.split(":")[-1] in ("seen", "seen-meta")


# 2. per delivered event-day


def steady_state_dedupe(redis: Redis, events: int) -> str:
    """Remove the site's dedupe shards and tell the collector the previous generation took ``events`` ids, so that it
    lays out the current generation for as many (as in production when traffic is steady). Returns what it did."""
    prefix, meta = dedupe.shard_prefix(SITE), dedupe.meta_key(SITE)
    stale = list(redis.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(stale), 1000):
        redis.delete(*stale[start : start + 1000])
    redis.delete(meta)
    current = dedupe.generation_of(time.time())
    redis.hset(meta, f"{current - 1}:n", events)
    bits = dedupe.shard_bits_for(events * dedupe.GROWTH_MARGIN)
    return f"{2**bits} shards for {events} ids, {events / 2**bits:.1f} per shard"


def outboxes_empty(redis: Redis) -> bool:
    return all(redis.llen(outbox_key(SITE, destination)) == 0 for destination in DESTINATIONS)


def jobs_waiting_or_running(redis: Redis) -> bool:
    if any(Queue(name, connection=redis).count for name in (q.name for q in Queue.all(connection=redis))):
        return True
    return any(worker.get_current_job_id() for worker in Worker.all(connection=redis))


def settle(redis: Redis, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait until ``condition`` has held on two polls in a row."""
    held = 0
    deadline = time.monotonic() + timeout
    while held < 2:
        if time.monotonic() > deadline:
            print(f"  ! {what}: not within {timeout:g} s; measuring anyway")
            return
        held = held + 1 if condition() else 0
        time.sleep(SETTLE_POLL_SECONDS)


def deliver(redis: Redis, collector_url: str, standins: StandIns, events: int) -> int:
    """Send ``events`` fresh events and wait until both vendors have them and nothing is left to do; the count sent."""
    standins.receipts.reset()
    sent = send_batches(collector_url + "/collect", events // EVENTS_PER_BATCH).ok * EVENTS_PER_BATCH
    wait_until(lambda: min(standins.receipts.count(vendor) for vendor in DESTINATIONS) >= sent,
               DELIVERY_TIMEOUT_SECONDS, f"the worker delivering {sent} events")  # fmt: skip
    settle(redis, lambda: outboxes_empty(redis) and not jobs_waiting_or_running(redis), "the worker idle")
    time.sleep(AFTER_DELIVERY_SECONDS)
    return sent


@dataclass(frozen=True)
class Volume:
    events: int
    layout: str
    keys: dict[str, KeyMemory]

    @property
    def weighted(self) -> float:
        return weighted_bytes(self.keys)


def delivered_volume(redis: Redis, collector_url: str, standins: StandIns, events: int) -> Volume:
    layout = steady_state_dedupe(redis, events)
    sent = deliver(redis, collector_url, standins, events)
    return Volume(sent, layout, key_memory(redis))


def naive_dedupe_bytes_per_event(redis_url: str, events: int) -> float:
    """A key per event id with a 24-hour TTL, in another database: used_memory per key. Empties it after."""
    redis = Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{NAIVE_DEDUPE_DB}")
    nonce = new_nonce()
    redis.set(f"seen:{SITE}:warm-up", "", ex=DAY_SECONDS, nx=True)
    before = used_memory(redis)
    for start in range(0, events, ENQUEUE_CHUNK):
        with redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids(nonce, 1, start, size=min(ENQUEUE_CHUNK, events - start)):
                pipe.set(f"seen:{SITE}:{event_id}", "", ex=DAY_SECONDS, nx=True)
            pipe.execute()
    per_event = (used_memory(redis) - before) / events
    redis.flushdb()
    return per_event


def print_volumes(volumes: list[Volume]) -> None:
    print("\nevery key after delivery, MEMORY USAGE weighted by the share of a day its TTL keeps it, per group:")
    groups = sorted({group for volume in volumes for group in by_group(volume.keys)})
    rows = []
    for group in sorted(groups, key=lambda g: -sum(m.bytes * m.day_share for m in by_group(volumes[-1].keys).get(g, []))):
        cells = [group]
        for volume in volumes:
            members = by_group(volume.keys).get(group, [])
            ttls = [m.ttl_seconds for m in members if m.ttl_seconds is not None]
            ttl = f"{min(ttls) / 3600:.2g}-{max(ttls) / 3600:.2g} h" if ttls else "none"
            cells += [len(members), sum(m.bytes for m in members), f"{sum(m.bytes * m.day_share for m in members):,.0f}", ttl]
        rows.append(cells)
    headers = ["group"]
    for volume in volumes:
        headers += [f"keys @{volume.events}", "bytes", "byte-days", "TTL"]
    print(table(headers, rows))
    for volume in volumes:
        print(f"@{volume.events} events: {volume.weighted:,.0f} byte-days in all = {volume.weighted / volume.events:.1f} B "
              f"per delivered event-day (fixed costs included); dedupe layout {volume.layout}")  # fmt: skip


# 3. one vendor down


def backlog_events(redis: Redis, vendor: str) -> int:
    return outbox.events_in(outbox.read(redis, vendor))


def outage_bytes_per_event(redis: Redis, collector_url: str, standins: StandIns, events: int) -> tuple[float, float, str]:
    """Commerce down, ``events`` sent: once all of its deliveries wait in the outbox, the growth of every key per event,
    leaving out the dedupe shards (there with or without an outage) and keys that expire within
    :data:`TRANSIENT_TTL_SECONDS` (the ledgers of failed jobs: they do not pile up over an hour); also used_memory's
    growth less those keys'. Returns both and the table of groups."""
    up = next(vendor for vendor in DESTINATIONS if vendor != DOWN_VENDOR)
    before, used_before = key_memory(redis), used_memory(redis)
    standins.take_down(DOWN_VENDOR)
    try:
        standins.receipts.reset()
        sent = send_batches(collector_url + "/collect", events // EVENTS_PER_BATCH).ok * EVENTS_PER_BATCH
        wait_until(lambda: standins.receipts.count(up) >= sent, DELIVERY_TIMEOUT_SECONDS, f"{up} receiving {sent} events")
        settle(redis, lambda: backlog_events(redis, DOWN_VENDOR) >= sent, f"every {DOWN_VENDOR} delivery back in its outbox")
        waiting = backlog_events(redis, DOWN_VENDOR)
        after, used_after = key_memory(redis), used_memory(redis)
    finally:
        standins.bring_up(DOWN_VENDOR)
    growth: dict[tuple[str, str], int] = {}
    for key in set(before) | set(after):
        old, new = before.get(key, KeyMemory(0, None)), after.get(key, KeyMemory(0, None))
        change = new.bytes - old.bytes
        if not change:
            continue
        group = group_of(key)
        if is_dedupe(group):
            kind = "dedupe shards: there with or without an outage"
        elif (ttl := (new if key in after else old).ttl_seconds) is not None and ttl <= TRANSIENT_TTL_SECONDS:
            kind = f"TTL <= {TRANSIENT_TTL_SECONDS // 60} min: does not pile up"
        else:
            kind = "backlog"
        growth[(group, kind)] = growth.get((group, kind), 0) + change
    backlog = sum(change for (_, kind), change in growth.items() if kind == "backlog")
    left_out = sum(change for (_, kind), change in growth.items() if kind != "backlog")
    rows = [[group, f"{change:,}", f"{change / sent:.1f}", kind]
            for (group, kind), change in sorted(growth.items(), key=lambda item: -item[1])]  # fmt: skip
    text = table(["group", "bytes grown", "per event", "counted as"], rows)
    print(f"\n{DOWN_VENDOR} answering 503, worker running: {sent} events sent, {up} received them all; when measured "
          f"{waiting} {DOWN_VENDOR} deliveries waited in its outbox, the rest (if any) in RQ jobs being tried. Growth of "
          f"each group's MEMORY USAGE meanwhile:")  # fmt: skip
    return backlog / sent, (used_after - used_before - left_out) / sent, text


def run(quick: bool = False) -> list[Row]:
    plan = QUICK if quick else FULL
    heading("4. Footprint: Redis per delivered event-day, per vendor outage, per queued event; process memory")
    with Stack("footprint") as stack:
        redis_server = stack.redis()
        redis = Redis.from_url(redis_server.url)
        standins = start_standins(stack)
        config = write_config(stack.dir / "collector.toml", standins.depict_url, standins.commerce_url)
        collector, collector_url = stack.collector(config, redis_server.url, serve_workers())

        # 1. queued, no worker
        empty = used_memory(redis)
        queued_per_event, accepted = collector_bytes_per_event(redis, collector_url, plan.queued)
        queued = accepted + WARMUP_BATCHES * EVENTS_PER_BATCH
        per_outbox = {d: (redis.memory_usage(outbox_key(SITE, d), samples=0) or 0) / queued for d in DESTINATIONS}
        job_per_event = rq_job_bytes_per_event(redis_server.url, plan.queued)
        heading("Footprint 1. Queued, no worker running (context)")
        print(f"Redis used_memory per queued event ({accepted} events through /collect, no worker): "
              f"{queued_per_event:.0f} bytes (outboxes' MEMORY USAGE per event: "
              f"{', '.join(f'{d} {b:.0f} B' for d, b in per_outbox.items())})")  # fmt: skip
        print(f"one RQ job per event ({plan.queued} jobs of one event, JSON serializer): {job_per_event:.0f} bytes")

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

        # 2. per delivered event-day, at two volumes
        heading("Footprint 2. Redis bytes per delivered event-day")
        volumes = [delivered_volume(redis, collector_url, standins, events) for events in plan.volumes]
        print_volumes(volumes)
        low, high = volumes
        marginal = (high.weighted - low.weighted) / (high.events - low.events)
        average = high.weighted / high.events
        naive = naive_dedupe_bytes_per_event(redis_server.url, high.events)
        print(f"marginal, ({high.events} - {low.events} events): {marginal:.1f} B per delivered event-day (the summary "
              f"row); average at {high.events} events, fixed costs included: {average:.1f} B")  # fmt: skip
        print(f"baseline, a key per event id with a 24 h TTL (SET NX EX, {high.events} keys): {naive:.0f} B per event-day")
        generation_hours, window_hours = dedupe.GENERATION_SECONDS / 3600, DAY_SECONDS / 3600
        print(f"a dedupe shard lives until the {window_hours:g} h window has passed over its {generation_hours:g} h "
              f"generation's end: {window_hours:g}-{window_hours + generation_hours:g} h depending on when in its "
              f"generation it is written (an id is kept {window_hours + generation_hours / 2:g} h on average); the "
              f"figures weight each shard by its TTL now")  # fmt: skip

        # 3. one vendor down
        heading(f"Footprint 3. One vendor down: the backlog at {OUTAGE_RATE:,} events/s for an hour")
        backlog_per_event, used_per_event, growth = outage_bytes_per_event(redis, collector_url, standins, plan.outage)
        print(growth)
        per_event = max(backlog_per_event, used_per_event)
        queued_events = OUTAGE_RATE * OUTAGE_SECONDS
        outage, baseline_outage = per_event * queued_events, job_per_event * queued_events
        print(f"backlog per queued event: {backlog_per_event:.1f} B (growth of MEMORY USAGE counted as backlog), "
              f"{used_per_event:.1f} B (used_memory growth less the rows not counted); the larger, x {queued_events / 1e6:g} M "
              f"events: {outage / GiB:.2f} GiB; one RQ job per event: {baseline_outage / GiB:.2f} GiB")  # fmt: skip

        print("\nRSS after the load (collector: after queueing them; worker: after delivering them):")
        print_rss({"collector serve (gunicorn)": collector, "collector worker": worker})
        print(GUNICORN_ROLES, WORKER_ROLES, sep="\n")
    return [
        Row("footprint", f"Redis bytes per delivered event-day, marginal {low.events}->{high.events} events "
            f"(average at {high.events}: {average:.1f} B)", f"{naive:.0f} B (key per id, 24 h)", f"{marginal:.1f} B",
            ratio(marginal, naive), f"<= {TARGET_BYTES_PER_EVENT_DAY} B", marginal <= TARGET_BYTES_PER_EVENT_DAY),
        Row("footprint", f"Redis for a 1 h {DOWN_VENDOR} outage at {OUTAGE_RATE:,} events/s ({per_event:.0f} B/event "
            f"x 3.6 M)", f"{baseline_outage / GiB:.2f} GiB (RQ job/event)", f"{outage / GiB:.2f} GiB",
            ratio(outage, baseline_outage), "< 1 GiB", outage < TARGET_OUTAGE_BYTES),
    ]  # fmt: skip
