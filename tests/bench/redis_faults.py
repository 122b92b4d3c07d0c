"""Redis faults (issue 18, targets 5 and 6): a SIGKILLed and restarted Redis, and a Redis outage, during delivery.

Both scenarios run :class:`tests.worker.redis_fault_stack.RedisFaultStack`:
an embedded redis-server with AOF, the spec-checking vendor stand-ins
answering after 150 ms, the collector, and ``collector worker``.

- restart: events flow; Redis is SIGKILLed and started again at once on the
  same port and data. Printed: acknowledged events lost, duplicates (and
  their bound, the requests both processes may have sent but not recorded), and how long
  after Redis answered again the vendors saw the first delivery and the last.
- outage: events flow; Redis is SIGKILLed and stays down ``OUTAGE_SECONDS``.
  Printed: delivery processes restarted, the worker tree's CPU as a share of
  one core, the log lines written from the kill until the first delivery
  after recovery (but the jobs' own lines), and how long an event sent once
  Redis answers takes to reach the vendor.

No assertion: ``tests/worker/test_redis_outage.py`` asserts the same, shorter.
Run alone: ``python -m tests.bench.redis_faults [--quick]``.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from collector.config.loading import load_config
from tests.bench.report import Row, heading, table
from worker.sender import unrecorded_at_most
from tests.worker.redis_fault_stack import RedisFaultStack, events, wait_until

OUTAGE_SECONDS = 30
QUICK_OUTAGE_SECONDS = 10
BATCH = 10


@dataclass
class Traffic:
    """Batches sent from a thread, one every ``pause`` seconds, until stopped; what was acknowledged."""

    stack: RedisFaultStack
    pause: float = 0.05

    def __post_init__(self) -> None:
        self.acknowledged: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = events(BATCH)
            if self.stack.send(batch):
                self.acknowledged.update(event["id"] for event in batch)
            self._stop.wait(self.pause)

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(timeout=70)
        return self.acknowledged


@dataclass(frozen=True)
class RestartFigures:
    acknowledged: int
    lost: int
    duplicates: int
    in_flight_at_kill: int  # at the stand-ins: sent, not yet answered
    in_flight_bound: int  # what both processes may have sent and not yet recorded (worker.sender.unrecorded_at_most)
    first_delivery_after_s: float
    all_delivered_after_s: float


@dataclass(frozen=True)
class OutageFigures:
    outage_seconds: float
    restarts: int
    cpu_share: float  # of one core, over the outage
    log_lines: int
    first_delivery_after_s: float
    log: list[str]


def in_flight(stack: RedisFaultStack) -> int:
    """Requests the stand-ins have received but not yet answered."""
    return sum(stand_in.arrivals - len(stand_in.requests) for stand_in in (stack.depict, stack.commerce))


def measure_restart(folder: Path, flow_seconds: float = 3.0) -> RestartFigures:
    stack = RedisFaultStack(folder)
    try:
        stack.wait_listening()
        traffic = Traffic(stack)
        time.sleep(flow_seconds)
        wait_until(lambda: len(stack.delivered()) > 0, 30)
        flying = in_flight(stack)
        stack.kill_redis()
        stack.start_redis()
        back = time.monotonic()
        before = len(stack.depict.requests) + len(stack.commerce.requests) + flying
        first = wait_until(lambda: len(stack.depict.requests) + len(stack.commerce.requests) > before, 90)
        time.sleep(flow_seconds)
        acknowledged = traffic.stop()
        wait_until(lambda: acknowledged <= stack.delivered(), 120, lambda: f"{len(acknowledged - stack.delivered())} missing")
        last = time.monotonic() - back
        duplicates = len(stack.depict.duplicates()) + len(stack.commerce.duplicates())
        bound = 2 * unrecorded_at_most(load_config(stack.config_path).settings.delivery.concurrency)
        return RestartFigures(len(acknowledged), len(acknowledged - stack.delivered()), duplicates, flying, bound, first, last)
    finally:
        stack.close()


def measure_outage(folder: Path, outage_seconds: float = OUTAGE_SECONDS) -> OutageFigures:
    stack = RedisFaultStack(folder)
    try:
        stack.wait_listening()
        traffic = Traffic(stack)
        time.sleep(2)
        traffic.stop()
        pids = stack.delivery_pids()
        seen = set(pids)
        log_start = len(stack.log_lines())
        stack.kill_redis()
        cpu_before, started = stack.cpu_seconds(), time.monotonic()
        while time.monotonic() - started < outage_seconds:
            seen |= stack.delivery_pids()
            time.sleep(0.2)
        cpu = stack.cpu_seconds() - cpu_before
        elapsed = time.monotonic() - started
        stack.start_redis()
        back = time.monotonic()
        probe = events(1, "purchase")
        assert stack.send(probe)
        wait_until(lambda: probe[0]["id"] in stack.delivered(), 120, stack.log_tail)
        first = time.monotonic() - back
        log = [line for line in stack.log_lines()[log_start:] if " worker.jobs: " not in line]
        return OutageFigures(elapsed, len(seen - pids), cpu / elapsed, len(log), first, log)
    finally:
        stack.close()


def run(quick: bool) -> list[Row]:
    heading("Redis faults: SIGKILL and restart, and an outage, during delivery at 150 ms")
    outage_seconds = QUICK_OUTAGE_SECONDS if quick else OUTAGE_SECONDS
    with tempfile.TemporaryDirectory(prefix="bench-redis-faults-") as folder:
        restart = measure_restart(Path(folder) / "restart")
        outage = measure_outage(Path(folder) / "outage", outage_seconds)
    print(table(["restart", ""], [[name, value] for name, value in vars(restart).items()]))
    print()
    print(table(["outage", ""], [[name, value] for name, value in vars(outage).items() if name != "log"]))
    print("\nthe worker's log from the kill to the first delivery after it, but the jobs' lines:")
    print("\n".join(outage.log[-40:]))
    per_30s = outage.log_lines <= 2 + outage_seconds // 30  # start, end, at most one per 30 s
    return [
        Row("redis", "restart: acknowledged events lost", "0", str(restart.lost), None, "0", restart.lost == 0),
        Row("redis", "restart: duplicates (bound: sent, not yet recorded)", str(restart.in_flight_bound), str(restart.duplicates), None,
            "<= sent, not recorded", restart.duplicates <= restart.in_flight_bound),  # fmt: skip
        Row("redis", "restart: first delivery after Redis answers (s)", "—", f"{restart.first_delivery_after_s:.1f}", None,
            "<= 5 s", restart.first_delivery_after_s <= 5),  # fmt: skip
        Row("redis", f"outage {outage_seconds} s: delivery processes restarted", "—", str(outage.restarts), None, "0", outage.restarts == 0),
        Row("redis", f"outage {outage_seconds} s: CPU, share of a core", "—", f"{outage.cpu_share:.1%}", None, "<= 5%",
            outage.cpu_share <= 0.05),  # fmt: skip
        Row("redis", f"outage {outage_seconds} s: log lines", "—", str(outage.log_lines), None, "start, end, 1 per 30 s", per_30s),
        Row("redis", f"outage {outage_seconds} s: first delivery after (s)", "—", f"{outage.first_delivery_after_s:.1f}", None,
            "succeeds", True),  # fmt: skip
    ]


if __name__ == "__main__":
    rows = run("--quick" in sys.argv[1:])
    print()
    from tests.bench.report import ROW_HEADERS

    print(table(ROW_HEADERS, [row.cells() for row in rows]))
