"""`collector worker` as an operator runs it: it starts, and it stops when told, leaving nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from redis import Redis
from rq import Worker

from tests.conftest import REPO, delivery_process_pid
from worker.dispatch import delivery_queue

STOP_WITHIN_SECONDS = 10  # a supervisor that hung on a child used to take over a minute


def both_listening(redis: Redis, supervisor_pid: int) -> bool:
    """Each destination's delivery process is alive, registered with RQ, and has forked its scheduler."""
    children = {child.pid: child for child in psutil.Process(supervisor_pid).children()}
    for destination in ("depict", "commerce"):
        pids = [w.pid for w in Worker.all(connection=redis, queue=delivery_queue(redis, destination)) if w.pid in children]
        if len(pids) != 1 or not children[pids[0]].children():
            return False
    return True


@pytest.fixture
def running_worker(config_file: Path, redis_url: str, redis_client: Redis, tmp_path: Path):
    """A `collector worker` in its own process group, once both delivery processes listen; its log in tmp_path."""
    log = open(tmp_path / "worker.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "collector", "worker", "--config", str(config_file)],
        cwd=REPO,
        env={**os.environ, "REDIS_URL": redis_url},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 30
    while not both_listening(redis_client, process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert both_listening(redis_client, process.pid), f"the delivery processes did not start; its log ends:\n{log_tail(tmp_path)}"
    family = [process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))]
    yield process, family
    if process.poll() is None:
        process.kill()
        process.wait(timeout=5)


def still_running(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def log_tail(folder: Path, lines: int = 30) -> str:
    return "\n".join((folder / "worker.log").read_text(errors="replace").splitlines()[-lines:])


@pytest.mark.parametrize(
    "how", ["SIGTERM to the supervisor", "SIGINT to the process group (Ctrl-C)"], ids=["sigterm", "ctrl-c"]
)
def test_the_worker_stops_promptly_and_takes_its_processes_along(running_worker, how, tmp_path):
    """Told to stop, the supervisor, its delivery processes and their schedulers all exit, and soon."""
    process, family = running_worker
    if how.startswith("SIGTERM"):
        process.send_signal(signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGINT)
    try:
        assert process.wait(timeout=STOP_WITHIN_SECONDS) == 0
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {STOP_WITHIN_SECONDS} s; its log ends:\n{log_tail(tmp_path)}")
    deadline = time.monotonic() + 5
    while still_running(family) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert still_running(family) == []


def test_a_sigkilled_delivery_process_is_replaced_and_its_scheduler_does_not_linger(running_worker, redis_client):
    """Killing a delivery process leaves no orphan behind (RQ's forked scheduler would run on for good)."""
    process, _ = running_worker
    delivery = psutil.Process(delivery_process_pid(redis_client, process.pid, "commerce"))
    deadline = time.monotonic() + 10
    while not delivery.children() and time.monotonic() < deadline:
        time.sleep(0.1)
    schedulers = [child.pid for child in delivery.children()]
    assert schedulers, "the delivery process has forked RQ's scheduler"
    delivery.kill()
    while still_running(schedulers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert still_running(schedulers) == []
    listening = lambda: [w.pid for w in Worker.all(connection=redis_client) if psutil.pid_exists(w.pid) and w.pid != delivery.pid]  # noqa: E731
    while len(listening()) < 2 and time.monotonic() < deadline + 10:
        time.sleep(0.1)
    assert len(listening()) == 2


def test_told_to_stop_mid_job_it_sends_nothing_more_and_puts_the_rest_back(running_worker, client, commerce, redis_client, tmp_path):
    """A stop waits for the requests in flight, not the whole job; the deliveries not started wait in the outbox."""
    from collector.mapping.commerce import web_event_id
    from collector.storage.outbox import decode_entry, outbox_key
    from tests.conftest import ORIGIN, SITE
    from tests.factories import make_event

    process, _ = running_worker
    commerce.hang_next(100, 1.5)  # every request takes 1.5 s, within the 2 s timeout
    events = [make_event("User Login") for _ in range(20)]  # one job; 16 are sent at once, 4 wait
    answer = client.post("/collect", json={"site": SITE, "events": events}, headers={"Origin": ORIGIN})
    assert answer.status_code == 202
    commerce.wait_for(lambda _: commerce.arrivals >= 16, timeout=10)
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert process.wait(timeout=STOP_WITHIN_SECONDS) == 0
    stopped_after = time.monotonic() - started

    sent = set(commerce.event_ids())
    entries = redis_client.lrange(outbox_key(SITE, "commerce"), 0, -1)
    waiting = {delivery["id"] for entry in entries for delivery in decode_entry(entry)}
    assert len(sent) == 16 and len(waiting) == 4, f"sent {len(sent)}, waiting {len(waiting)}; log:\n{log_tail(tmp_path)}"
    assert sent | waiting == {web_event_id(SITE, event["id"]) for event in events}
    assert stopped_after < 5, "it waited for more than the requests in flight"


def test_a_stop_that_came_before_rqs_signal_handlers_still_ends_the_worker(redis_client):
    """A SIGTERM while RQ starts its scheduler reaches only the process's own handler (``stopping``): the loop ends anyway."""
    from worker.job_data import JobDataSerializer

    from worker.process import DeliveryWorker, worker_queue

    stopping = threading.Event()
    stopping.set()
    worker = DeliveryWorker([worker_queue(redis_client, "commerce")], connection=redis_client, serializer=JobDataSerializer, stopping=stopping)

    def hung(*_: object) -> None:
        raise TimeoutError("the worker did not end its loop")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(15)
    try:
        started = time.monotonic()
        worker.work(with_scheduler=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert time.monotonic() - started < 15
