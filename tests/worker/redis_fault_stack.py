"""A deployment whose Redis can be SIGKILLed and restarted on the same port and data: for the Redis fault tests and bench.

Everything runs on 127.0.0.1 and is started here and stopped by its PID: an
embedded ``redis-server`` (AOF on, as in production) in a data folder that
outlives each kill, the test suite's spec-checking vendor stand-ins made to
answer after a fixed delay (a real vendor's latency keeps requests in flight
when Redis dies), the collector on a real port, and a ``collector worker``
supervisor whose log (stderr, the production text format) goes to a file, so
that a test can count the lines an outage writes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import logging
import psutil
from werkzeug.serving import make_server

from collector import create_app
from collector.config.loading import load_config
from collector.storage.redis_server import EmbeddedRedis, free_port
from tests.conftest import COMMERCE_KEY, DEPICT_KEY, REPO, config_toml
from tests.factories import make_event
from tests.stack import send_as_the_snippet
from tests.vendors import CommerceStandIn, DepictStandIn

VENDOR_DELAY_SECONDS = 0.15
FOREVER = 10**9


def events(count: int, event_type: str = "add_to_cart") -> list[dict]:
    return [make_event(event_type, props={"product_id": f"P-{index}"}) for index in range(count)]


def wait_until(condition: Callable[[], bool], timeout: float, explain: Callable[[], str] = lambda: "") -> float:
    """Poll until ``condition()``; the seconds it took. Raises AssertionError with ``explain()`` on timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not reached within {timeout} s; {explain()}")
        time.sleep(0.05)
    return time.monotonic() - started


class RedisFaultStack:
    """Redis, slow vendor stand-ins, the collector and a logged ``collector worker``; see the module docstring."""

    def __init__(self, folder: Path, vendor_delay: float = VENDOR_DELAY_SECONDS):
        self.folder = folder
        self.redis = EmbeddedRedis(port=free_port(), data_dir=str(folder / "redis")).start()
        self.depict = DepictStandIn(DEPICT_KEY).start()
        self.commerce = CommerceStandIn(COMMERCE_KEY).start()
        for stand_in in (self.depict, self.commerce):
            stand_in.hang_next(FOREVER, vendor_delay)
        self.config_path = folder / "collector.toml"
        self.config_path.write_text(config_toml(self.depict.url, self.commerce.url))
        keys = {"TEST_DEPICT_KEY": DEPICT_KEY, "TEST_COMMERCE_KEY": COMMERCE_KEY}
        os.environ.update(keys)
        self.env = {**os.environ, **keys, "REDIS_URL": self.redis.url}
        app = create_app({"COLLECTOR_CONFIG": load_config(self.config_path), "REDIS_URL": self.redis.url})
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per /collect request
        self.http = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        self.log_path = folder / "worker.log"
        with open(self.log_path, "wb") as log:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "collector", "worker", "--config", str(self.config_path)],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    # Redis

    def kill_redis(self) -> None:
        """SIGKILL the redis-server (it writes nothing more: what its AOF holds is what a restart finds)."""
        pid = self.redis.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        process, self.redis._process = self.redis._process, None
        assert process is not None
        process.wait(timeout=10)

    def start_redis(self) -> None:
        """Start redis-server again on the same port and data folder; returns once it answers PING."""
        self.redis.start()

    # the worker

    def delivery_pids(self) -> set[int]:
        """The supervisor's delivery processes (its children but multiprocessing's resource tracker)."""
        children = psutil.Process(self.worker.pid).children()
        return {child.pid for child in children if "resource_tracker" not in " ".join(_cmdline(child))}

    def wait_listening(self, timeout: float = 30) -> None:
        """Until both delivery processes run and have forked RQ's scheduler."""

        def ready() -> bool:
            try:
                pids = self.delivery_pids()
                return len(pids) == 2 and all(psutil.Process(pid).children() for pid in pids)
            except psutil.Error:
                return False  # one just ended

        wait_until(ready, timeout, lambda: f"delivery processes {self.delivery_pids()}; log ends:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """CPU used so far by the whole worker tree, counting processes that ended and were waited for."""
        root = psutil.Process(self.worker.pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
        return total

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_lines()[-lines:])

    # traffic

    def send(self, batch: list[dict]) -> bool:
        """POST as the snippet does, until acknowledged; True when 202."""
        return send_as_the_snippet(self.url, batch)

    def delivered(self) -> set[str]:
        """Snippet event ids that reached Depict (one Depict event per snippet event)."""
        return set(self.depict.event_ids())

    def close(self) -> None:
        if self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait(timeout=5)
        self.http.shutdown()
        self.depict.stop()
        self.commerce.stop()
        self.redis.stop()


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []
