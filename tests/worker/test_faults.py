"""Fault scenarios with figures: killed workers, failing, throttling, refusing and hanging vendors, Redis restarts.

Each scenario runs its own stack on 127.0.0.1 (a redis-server, the collector
on a real port, a `collector worker` supervisor process, fresh vendor
stand-ins), sends events the way the snippet does (retrying 503s), and
records `sent / acknowledged / delivered / duplicates / dead-lettered /
recovery seconds`. The table is printed at the end of the test run; run
only these with `python -m pytest tests/worker/test_faults.py`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from redis import Redis
from werkzeug.serving import make_server

from collector import create_app
from collector.config.loading import load_config
from collector.mapping.commerce import web_event_id
from collector.storage.redis_server import EmbeddedRedis, free_port
from tests.conftest import COMMERCE_KEY, DEPICT_KEY, ORIGIN, OTHER_SITE, REPO, SITE, config_toml, delivery_process_pid
from tests.factories import make_event
from tests.stack import send_as_the_snippet
from tests.vendors import CommerceStandIn, DepictStandIn
from worker.dead_letters import DeadLetters
from worker.dispatch import MAINTENANCE_LOCK_SECONDS, STUCK_AFTER_SECONDS, Dispatcher, delivery_queue
from worker.process import HEARTBEAT_TTL_SECONDS, MAINTENANCE_SECONDS
from worker.sender import unrecorded_at_most



@dataclass
class FaultStack:
    """A whole deployment for one scenario, everything started here and stopped by its PID."""

    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    redis_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.redis = EmbeddedRedis(port=self.redis_port, data_dir=str(self.tmp / "redis")).start()
        self.depict = DepictStandIn(DEPICT_KEY).start()
        self.commerce = CommerceStandIn(COMMERCE_KEY).start()
        self.config_path = self.tmp / "collector.toml"
        self.config_path.write_text(
            config_toml(self.depict.url, self.commerce.url).replace('api_key = "wrong-key"', 'api_key = "${OTHER_KEY}"')
        )
        self.env = {**os.environ, "TEST_DEPICT_KEY": DEPICT_KEY, "TEST_COMMERCE_KEY": COMMERCE_KEY, "OTHER_KEY": "wrong-key"}
        os.environ.update({"TEST_DEPICT_KEY": DEPICT_KEY, "TEST_COMMERCE_KEY": COMMERCE_KEY, "OTHER_KEY": "wrong-key"})
        app = create_app({"COLLECTOR_CONFIG": load_config(self.config_path), "REDIS_URL": self.redis.url})
        self.http = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        self.worker: subprocess.Popen[bytes] | None = None
        self.start_worker()

    def start_worker(self, **env: str) -> None:
        self.env.update(env)
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "collector", "worker", "--config", str(self.config_path)],
            cwd=REPO,
            env={**self.env, "REDIS_URL": self.redis.url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait(timeout=5)

    def delivery_pids(self) -> list[int]:
        """The supervisor's delivery processes (children that are not multiprocessing's helpers)."""
        assert self.worker is not None
        children = psutil.Process(self.worker.pid).children()
        return [child.pid for child in children if "resource_tracker" not in " ".join(child.cmdline())]

    def send(self, events: list[dict], site: str = SITE) -> bool:
        """POST as the snippet does, until acknowledged; True when 202."""
        return send_as_the_snippet(self.url, events, site)

    def delivery_pid(self, destination: str) -> int:
        assert self.worker is not None
        return delivery_process_pid(Redis.from_url(self.redis.url), self.worker.pid, destination)

    def dead_letters(self) -> DeadLetters:
        return DeadLetters(Redis.from_url(self.redis.url))

    def close(self) -> None:
        self.stop_worker()
        self.http.shutdown()
        self.depict.stop()
        self.commerce.stop()
        self.redis.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[FaultStack]:
    deployment = FaultStack(tmp_path)
    try:
        yield deployment
    finally:
        deployment.close()


def batches(count: int, size: int = 10, event_type: str = "add_to_cart") -> list[list[dict]]:
    return [[make_event(event_type, props={"product_id": f"P-{i}-{j}"}) for j in range(size)] for i in range(count)]


def wait_until(condition, timeout: float, explain=lambda: "") -> float:
    """Poll until ``condition()``; return the seconds it took (fails the test on timeout, with ``explain()``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not reached within {timeout} s; {explain()}")
        time.sleep(0.1)
    return time.monotonic() - started


def where_deliveries_wait(redis_url: str) -> str:
    """Outboxes, RQ queues and registries, and the locks that gate them: what a stuck pipeline looks like."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    counts = {}
    for key in sorted(redis.scan_iter("collector:outbox:*")):
        counts[key] = redis.llen(key)
    for key in sorted(redis.scan_iter("rq:*")):
        kind = redis.type(key)
        counts[key] = {"list": redis.llen, "zset": redis.zcard, "set": redis.scard}.get(kind, lambda k: redis.ttl(k))(key)
    counts["ledgers"] = sum(1 for _ in redis.scan_iter("collector:ledger:*", count=1000))
    return ", ".join(f"{key}={value}" for key, value in counts.items() if not key.startswith(("rq:job:", "rq:results:", "rq:execution", "rq:worker:")))


def record(figures: list[dict], scenario: str, sent: int, acknowledged: int, delivered: int, duplicates: int, dead: int, recovery: float) -> None:
    figures.append(
        {
            "scenario": scenario,
            "sent": sent,
            "acknowledged": acknowledged,
            "delivered": delivered,
            "duplicates": duplicates,
            "dead-lettered": dead,
            "recovery s": round(recovery, 1),
        }
    )


def test_sigkilled_delivery_processes_lose_nothing(stack, fault_figures):
    """2,000 events flow while delivery processes are SIGKILLed three times: nothing is lost.

    A request the vendor answered just before the kill, but whose answer the
    worker never recorded, is sent again after recovery with the same
    idempotency id (Depict's deduplication_id, the Commerce Web Event id).
    At most the requests in flight at each kill can be resent that way.
    """
    chunks = batches(200)
    events = [event for batch in chunks for event in batch]
    acknowledged = 0
    kills = 0
    for index, batch in enumerate(chunks):
        acknowledged += len(batch) if stack.send(batch) else 0
        if index in (50, 100, 150):
            for pid in stack.delivery_pids():
                os.kill(pid, signal.SIGKILL)
                kills += 1
    last_kill = time.monotonic()
    ids = {event["id"] for event in events}
    wait_until(
        lambda: ids <= set(stack.depict.event_ids()) and len(set(stack.commerce.event_ids())) >= len(ids),
        timeout=120,
        explain=lambda: (
            f"{len(ids - set(stack.depict.event_ids()))} not at Depict; "
            f"{len(set(stack.commerce.event_ids()))} distinct at Commerce of {len(ids)}; "
            f"{len(stack.dead_letters())} dead-lettered; {where_deliveries_wait(stack.redis.url)}"
        ),
    )
    recovery = time.monotonic() - last_kill
    record(fault_figures, f"SIGKILL x{kills} during 2,000 events", len(events), acknowledged, len(set(stack.depict.event_ids()) & ids), len(stack.depict.duplicates()) + len(stack.commerce.duplicates()), len(stack.dead_letters()), recovery)
    assert acknowledged == len(events)
    in_flight_bound = kills * unrecorded_at_most(load_config(stack.config_path).settings.delivery.concurrency)
    assert len(stack.depict.duplicates()) + len(stack.commerce.duplicates()) <= in_flight_bound


def test_a_vendor_500_for_a_while_then_recovers(stack, fault_figures):
    """Commerce answers 500 for 3 s: deliveries back off and all arrive once after it recovers."""
    stack.commerce.fail_for(3, 500)
    fault_ends = time.monotonic() + 3
    events = [event for batch in batches(20) for event in batch]
    acknowledged = sum(len(batch) for batch in [events[i : i + 10] for i in range(0, len(events), 10)] if stack.send(batch))
    wait_until(lambda: len(stack.commerce.event_ids()) >= len(events), timeout=60)
    recovery = max(time.monotonic() - fault_ends, 0.0)
    failed = sum(1 for request in stack.commerce.requests if request.status == 500)
    record(fault_figures, f"vendor 500 for 3 s ({failed} refused requests)", len(events), acknowledged, len(stack.commerce.event_ids()), len(stack.commerce.duplicates()), len(stack.dead_letters()), recovery)
    assert stack.commerce.duplicates() == [] and len(stack.dead_letters()) == 0


def test_a_429_with_retry_after_is_honoured(stack, fault_figures):
    """A 429 with Retry-After: 3 is retried no sooner than 3 s later, then delivered once."""
    stack.commerce.fail_next(1, 429, retry_after=3)
    event = make_event("User Login")
    assert stack.send([event])
    wait_until(lambda: len(stack.commerce.event_ids()) == 1, timeout=30)
    attempts = stack.commerce.requests
    gap = attempts[1].received_at - attempts[0].received_at
    record(fault_figures, f"vendor 429 Retry-After 3 (gap {gap:.1f} s)", 1, 1, len(stack.commerce.event_ids()), len(stack.commerce.duplicates()), len(stack.dead_letters()), gap)
    assert attempts[0].status == 429 and attempts[-1].status == 200
    assert gap >= 3.0


def test_a_rate_limited_vendor_gets_everything_once_with_few_429s_once_the_throttle_learned(stack, fault_figures):
    """Commerce allows 40 requests/s and answers 429 (Retry-After: 1) beyond: the throttle finds the rate by itself.

    Every event arrives once and none is dead-lettered; after the first
    3 seconds (the throttle starts at full speed) at most a tenth of the
    requests are refused. A busier machine only sends slower, so fewer.
    """
    stack.commerce.limit_rate(40)
    events = [make_event("User Login") for _ in range(400)]
    acknowledged = sum(len(events[i : i + 10]) for i in range(0, len(events), 10) if stack.send(events[i : i + 10]))
    expected = {web_event_id(SITE, event["id"]) for event in events}
    took = wait_until(lambda: expected <= set(stack.commerce.event_ids()), timeout=120, explain=lambda: where_deliveries_wait(stack.redis.url))
    requests = stack.commerce.requests
    later = [request for request in requests if request.received_at - requests[0].received_at > 3]
    refused_later = sum(request.status == 429 for request in later)
    refused = sum(request.status == 429 for request in requests)
    record(fault_figures, f"vendor allows 40/s ({refused} x 429, {refused_later}/{len(later)} after 3 s)", len(events), acknowledged, len(expected & set(stack.commerce.event_ids())), len(stack.commerce.duplicates()), len(stack.dead_letters()), took)
    assert stack.commerce.duplicates() == [] and len(stack.dead_letters()) == 0
    assert refused_later <= 0.1 * len(later), f"{refused_later} of {len(later)} requests refused after the first 3 s"


def test_a_401_dead_letters_one_site_and_replay_delivers_after_the_key_is_fixed(stack, fault_figures):
    """other_store's bad key dead-letters its events while test_store flows; fixed and replayed, they arrive once."""
    lost = [make_event("User Login") for _ in range(5)]
    fine = [make_event("User Login") for _ in range(5)]
    assert stack.send(lost, site=OTHER_SITE) and stack.send(fine)
    wait_until(lambda: len(stack.commerce.event_ids()) >= 5 and len(stack.dead_letters()) >= 5, timeout=30)
    assert all(letter.status == 401 and letter.delivery["site"] == OTHER_SITE for letter in stack.dead_letters())

    stack.stop_worker()
    stack.start_worker(OTHER_KEY=COMMERCE_KEY)
    fixed_at = time.monotonic()
    replay = subprocess.run(
        [sys.executable, "-m", "collector", "replay", "--config", str(stack.config_path), "--site", OTHER_SITE, "--status", "401"],
        cwd=REPO,
        env={**stack.env, "REDIS_URL": stack.redis.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replay.returncode == 0, replay.stderr
    assert "requeued 5 dead-lettered deliveries" in replay.stderr
    wait_until(lambda: len(stack.commerce.event_ids()) >= 10, timeout=30)
    record(fault_figures, "vendor 401 for one site, key fixed, replayed", 10, 10, len(stack.commerce.event_ids()), len(stack.commerce.duplicates()), len(stack.dead_letters()), time.monotonic() - fixed_at)
    assert stack.commerce.duplicates() == [] and len(stack.dead_letters()) == 0


def test_a_hanging_vendor_times_out_and_is_retried(stack, fault_figures):
    """Depict hangs 30 s on one request: the 2 s HTTP timeout fires, the retry delivers."""
    stack.depict.hang_next(1, 30)
    event = make_event("purchase", props={"product_id": "P-1"})
    started = time.monotonic()
    assert stack.send([event])
    took = wait_until(lambda: event["id"] in stack.depict.event_ids(), timeout=30)
    record(fault_figures, "vendor hangs 30 s (timeout 2 s)", 1, 1, len(stack.depict.event_ids()), len(stack.depict.duplicates()), len(stack.dead_letters()), time.monotonic() - started)
    assert took < 15  # the job timeout is far longer; only the HTTP timeout explains this
    assert stack.depict.duplicates() == []


def test_redis_restart_while_events_flow(stack, fault_figures):
    """Redis stops for 3 s mid-flow: /collect answers 503 meanwhile, and every acknowledged event arrives once."""
    events = [event for batch in batches(60) for event in batch]
    chunks = [events[i : i + 10] for i in range(0, len(events), 10)]
    answers_503 = []

    def outage() -> None:
        time.sleep(0.5)
        stack.redis.stop()
        status = httpx.post(f"{stack.url}/collect", content=json.dumps({"site": SITE, "events": [make_event()]}), headers={"Origin": ORIGIN}, timeout=10).status_code
        answers_503.append(status)
        time.sleep(3)
        stack.redis.start()

    thread = threading.Thread(target=outage)
    thread.start()
    acknowledged_ids: set[str] = set()
    for chunk in chunks:
        if stack.send(chunk):
            acknowledged_ids.update(event["id"] for event in chunk)
        time.sleep(0.02)
    thread.join()
    back = time.monotonic()
    wait_until(lambda: acknowledged_ids <= set(stack.depict.event_ids()), timeout=90)
    record(fault_figures, "redis stopped 3 s and restarted", len(events), len(acknowledged_ids), len(acknowledged_ids & set(stack.depict.event_ids())), len(stack.depict.duplicates()), len(stack.dead_letters()), time.monotonic() - back)
    assert answers_503 == [503]
    assert len(acknowledged_ids) == len(events)
    assert stack.depict.duplicates() == []


def test_a_job_killed_in_flight_runs_again_despite_a_left_maintenance_lock(stack, fault_figures):
    """The commerce process is SIGKILLed mid-request and leaves RQ's maintenance lock: the job still runs again, once.

    RQ holds ``rq:clean_registries:<queue>`` for 15 minutes; our queue holds
    it for MAINTENANCE_LOCK_SECONDS, so the only worker of the queue re-runs
    the abandoned job within that, the heartbeat lease and one maintenance pass.
    """
    stack.commerce.hang_next(1, 300)  # longer than the test: the hung request is never answered while it runs
    event = make_event("User Login")
    assert stack.send([event])
    wait_until(lambda: stack.commerce.arrivals >= 1, timeout=30)
    killed_at = time.monotonic()
    os.kill(stack.delivery_pid("commerce"), signal.SIGKILL)
    redis = Redis.from_url(stack.redis.url)
    redis.set(delivery_queue(redis, "commerce").registry_cleaning_key, 1, ex=MAINTENANCE_LOCK_SECONDS)
    bound = MAINTENANCE_LOCK_SECONDS + HEARTBEAT_TTL_SECONDS + 3 * MAINTENANCE_SECONDS
    took = wait_until(lambda: len(stack.commerce.event_ids()) >= 1, timeout=bound + 30, explain=lambda: where_deliveries_wait(stack.redis.url))
    record(fault_figures, "commerce process SIGKILLed mid-request, lock left", 1, 1, len(stack.commerce.event_ids()), len(stack.commerce.duplicates()), len(stack.dead_letters()), time.monotonic() - killed_at)
    assert took <= bound
    assert stack.commerce.duplicates() == []


def test_a_job_dequeued_by_a_worker_killed_before_it_started_runs_within_seconds(stack, fault_figures):
    """A job left in RQ's intermediate queue (its worker died between dequeue and start) runs again, once.

    RQ waits a minute before it calls such a job stuck; our queue waits STUCK_AFTER_SECONDS.
    """
    stack.stop_worker()
    event = make_event("User Login")
    assert stack.send([event])
    redis = Redis.from_url(stack.redis.url)
    assert Dispatcher(redis, load_config(stack.config_path).settings.delivery).drain_all() == 1
    queue = delivery_queue(redis, "commerce")
    assert redis.lmove(queue.key, queue.intermediate_queue.key) is not None  # what RQ's dequeue does, then the kill
    restarted = time.monotonic()
    stack.start_worker()
    bound = STUCK_AFTER_SECONDS + 3 * MAINTENANCE_SECONDS + 10
    took = wait_until(lambda: len(stack.commerce.event_ids()) >= 1, timeout=bound + 30, explain=lambda: where_deliveries_wait(stack.redis.url))
    record(fault_figures, "job stranded between dequeue and start", 1, 1, len(stack.commerce.event_ids()), len(stack.commerce.duplicates()), len(stack.dead_letters()), time.monotonic() - restarted)
    assert took <= bound
    assert stack.commerce.duplicates() == []

