"""Redis SIGKILLed under a running ``collector worker``: restarted at once, or left down for a while.

Real parts only (``redis_fault_stack.py``): a redis-server with AOF killed
with SIGKILL and started again on the same port and data folder, a
``collector worker`` subprocess, and the spec-checking vendor stand-ins
answering after 150 ms, so that requests are in flight when Redis dies.
Timings are printed, and bounded only loosely: the machine may be busy.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.config.loading import load_config
from tests.worker.redis_fault_stack import RedisFaultStack, events, wait_until
from worker.sender import unrecorded_at_most

RESUME_BOUND_SECONDS = 30  # loose on purpose; RQ's scheduler lock alone used to hold a job back 57-60 s
OUTAGE_SECONDS = 8
CPU_SHARE_BOUND = 0.05  # of one core, for the whole worker tree while Redis is down


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RedisFaultStack]:
    deployment = RedisFaultStack(tmp_path)
    try:
        deployment.wait_listening()
        yield deployment
    finally:
        deployment.close()


class Flow:
    """Batches of 10 events sent from a thread until stopped; the ids acknowledged with a 202."""

    def __init__(self, stack: RedisFaultStack):
        self.acknowledged: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(stack,), daemon=True)
        self._thread.start()

    def _run(self, stack: RedisFaultStack) -> None:
        while not self._stop.is_set():
            batch = events(10)
            if stack.send(batch):
                self.acknowledged.update(event["id"] for event in batch)
            self._stop.wait(0.05)

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(timeout=70)
        return self.acknowledged


def answered(stack: RedisFaultStack) -> int:
    return len(stack.depict.requests) + len(stack.commerce.requests)


def in_flight(stack: RedisFaultStack) -> int:
    return stack.depict.arrivals + stack.commerce.arrivals - answered(stack)


def test_redis_sigkilled_and_restarted_mid_flow_loses_nothing_and_resumes(stack: RedisFaultStack, capsys):
    """Every acknowledged event arrives, duplicates stay within the requests in flight, delivery resumes soon."""
    pids = stack.delivery_pids()
    flow = Flow(stack)
    wait_until(lambda: len(stack.delivered()) >= 50, 30, stack.log_tail)
    flying = in_flight(stack)
    stack.kill_redis()
    stack.start_redis()
    back = time.monotonic()
    seen = answered(stack) + flying
    resumed = wait_until(lambda: answered(stack) > seen, RESUME_BOUND_SECONDS + 30, stack.log_tail)
    time.sleep(2)
    acknowledged = flow.stop()
    everything = wait_until(
        lambda: acknowledged <= stack.delivered(), 60, lambda: f"{len(acknowledged - stack.delivered())} missing; {stack.log_tail()}"
    )
    duplicates = len(stack.depict.duplicates()) + len(stack.commerce.duplicates())
    with capsys.disabled():
        print(
            f"\nredis SIGKILL + restart: {len(acknowledged)} acknowledged, 0 lost, {duplicates} duplicates "
            f"({flying} requests in flight at the kill), first delivery {resumed:.1f} s after Redis answered, "
            f"all delivered {time.monotonic() - back:.1f} s after ({everything:.1f} s after the flow stopped)"
        )
    unrecorded = unrecorded_at_most(load_config(stack.config_path).settings.delivery.concurrency)
    assert duplicates <= 2 * unrecorded, "more duplicates than both delivery processes can have sent and not recorded"
    assert resumed <= RESUME_BOUND_SECONDS
    assert stack.delivery_pids() == pids, "a delivery process was restarted"


def test_a_redis_outage_keeps_the_delivery_processes_up_and_quiet(stack: RedisFaultStack, capsys):
    """While Redis is down: the same processes, next to no CPU, one line when it starts and one when it ends;
    an event sent once Redis is back is delivered."""
    flow = Flow(stack)
    wait_until(lambda: len(stack.delivered()) >= 20, 30, stack.log_tail)
    flow.stop()
    pids = stack.delivery_pids()
    first_line = len(stack.log_lines())
    stack.kill_redis()
    cpu_before, down_at = stack.cpu_seconds(), time.monotonic()
    time.sleep(OUTAGE_SECONDS)
    cpu_share = (stack.cpu_seconds() - cpu_before) / (time.monotonic() - down_at)
    still_up = stack.delivery_pids()
    stack.start_redis()
    back = time.monotonic()
    probe = events(1, "purchase")
    assert stack.send(probe)
    took = wait_until(lambda: probe[0]["id"] in stack.delivered(), 60, stack.log_tail)
    outage_log = [line for line in stack.log_lines()[first_line:] if " worker.jobs: " not in line]
    with capsys.disabled():
        print(
            f"\nredis down {OUTAGE_SECONDS} s: {cpu_share:.1%} of a core, {len(outage_log)} log lines, "
            f"first event after it delivered in {took:.1f} s (sent {time.monotonic() - back - took:.1f} s after Redis answered)"
        )
        print("\n".join(outage_log))
    assert still_up == pids and stack.delivery_pids() == pids, "a delivery process died or was restarted"
    assert cpu_share <= CPU_SHARE_BOUND
    assert len(outage_log) == 2, "one line when the outage starts, one when it ends"
    assert "unreachable" in outage_log[0] and "answers again" in outage_log[1]


def test_a_lock_is_retaken_by_its_owner_and_taken_over_from_a_dead_process_of_this_host(redis_client):
    """What lets delivery resume at once after a Redis restart: locks that name their owner (worker/dispatch.py)."""
    import socket
    import subprocess
    import sys

    from worker.dispatch import owner_token, take_lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    redis_client.set("lock:dead", f"{host}:{dead.pid}", px=60_000)
    redis_client.set("lock:alive", f"{host}:{os.getppid()}", px=60_000)
    redis_client.set("lock:elsewhere", f"another-host:{dead.pid}", px=60_000)
    redis_client.set("lock:mine", owner_token(), px=60_000)

    assert take_lock(redis_client, "lock:dead", owner_token(), 30_000)
    assert not take_lock(redis_client, "lock:alive", owner_token(), 30_000)
    assert not take_lock(redis_client, "lock:elsewhere", owner_token(), 30_000)
    assert take_lock(redis_client, "lock:mine", owner_token(), 30_000)
    assert redis_client.get("lock:dead").decode() == owner_token() and redis_client.pttl("lock:mine") <= 30_000
