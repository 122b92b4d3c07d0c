"""Starting and stopping what a benchmark stage needs: all on 127.0.0.1, every process stopped by its PID.

A :class:`Stack` is one stage's deployment. What it starts (an embedded
``redis-server``, gunicorn masters, ``collector serve``, ``collector
worker``) is stopped when the stack closes, last started first: SIGTERM to
the process it started; after a grace period, SIGKILL to whatever still
runs of that process and of its descendants (gunicorn workers, delivery
processes, multiprocessing helpers), which were found by PID before the
SIGTERM, plus any child they started since. Nothing is stopped by name.
A service may get its SIGTERM early (``Service.terminate``), to wind down
while the bench goes on; ``stop`` and closing the stack still wait for it.

Each process writes to a log file in the stack's temporary folder; when one
does not come up, the error shows the tail of its log. The folder is
removed when the stack closes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn

import psutil
from redis import Redis
from rq import Worker

from collector.config.defaults import DESTINATIONS
from collector.storage.redis_server import EmbeddedRedis, free_port

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
STARTUP_SECONDS = 30.0
STOP_GRACE_SECONDS = 15.0
# `collector worker` is gone a second or two after SIGTERM (tests/worker/test_process.py proves it);
# the bench SIGKILLs, and reports, whatever of it is still running after this.
WORKER_STOP_GRACE_SECONDS = 3.0
POLL_SECONDS = 0.1
# What `collector serve` gives gunicorn (collector/cli/serve.py); the hello-world baseline gets the same.
SERVE_WORKER_CLASS = "sync"
SERVE_KEEPALIVE_SECONDS = 5


def serve_workers() -> int:
    """``collector serve``'s default worker count (2 x cores + 1), used for both apps of the ingest bench."""
    return 2 * (os.cpu_count() or 1) + 1


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; return the seconds it took. Raises TimeoutError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(POLL_SECONDS)
    return time.monotonic() - started


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """User + system CPU seconds the processes used so far (those that ended count nothing)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return 200 <= answer.status < 300
    except (OSError, urllib.error.URLError):
        return False


class Service:
    """One process this benchmark started, with its log; stopped by PID with its descendants."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, stop_grace_seconds: float):
        self.name = name
        self.stop_grace_seconds = stop_grace_seconds
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None
        self._terminated: list[psutil.Process] = []  # what ran of it when terminate() sent SIGTERM

    def start(self) -> "Service":
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self._popen is not None, f"{self.name} was not started"
        return self._popen.pid

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def processes(self) -> list[psutil.Process]:
        """This process and its live descendants."""
        if not self.alive():
            return []
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def fail(self, message: str) -> NoReturn:
        raise RuntimeError(f"{self.name}: {message}\n--- last lines of {self.log_path.name} ---\n{self.log_tail()}")

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = STARTUP_SECONDS) -> "Service":
        """Poll ``condition`` until true; fail early, with the log's tail, if the process exits."""
        deadline = time.monotonic() + timeout
        while not condition():
            if not self.alive():
                self.fail(f"exited with {self._popen.returncode if self._popen else '?'} before {what}")
            if time.monotonic() > deadline:
                self.fail(f"no {what} within {timeout:g} s")
            time.sleep(POLL_SECONDS)
        return self

    def wait_http(self, url: str) -> "Service":
        return self.wait_for(lambda: http_ok(url), f"2xx answer from {url}")

    def terminate(self) -> None:
        """SIGTERM to the process now, without waiting (so that it stops while the bench goes on);
        :meth:`stop`, later or when the stack closes, waits for it and kills what is left."""
        if self.alive():
            self._terminated = self.processes()
            self._popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]

    def stop(self) -> None:
        """SIGTERM to the process; what still runs of it and its descendants after the grace period, SIGKILL."""
        if self._popen is None:
            return
        known = self._terminated or self.processes()
        deadline = time.monotonic() + self.stop_grace_seconds
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout=self.stop_grace_seconds)
            except subprocess.TimeoutExpired:
                pass
        psutil.wait_procs(known[1:], timeout=max(0.0, deadline - time.monotonic()))
        survivors = still_running(known)
        if survivors:
            pids = ", ".join(str(process.pid) for process in survivors)
            print(f"  ({self.name}: still running {self.stop_grace_seconds:g} s after SIGTERM; SIGKILL to PID {pids})")
        for _ in range(3):  # a dying parent may have started a child meanwhile
            if not survivors:
                break
            for process in survivors:  # parents first, so that none restarts a child
                try:
                    process.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(survivors, timeout=5)
            survivors = still_running(survivors)
        self._popen.wait(timeout=5)
        self._popen = None
        self._terminated = []


def still_running(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` still running (zombies aside), and their descendants now, parents first."""
    found: dict[int, psutil.Process] = {}
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                found.setdefault(process.pid, process)
                for child in process.children(recursive=True):
                    found.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


class Stack:
    """Everything one benchmark stage started; ``with Stack(...)`` stops it all on the way out."""

    def __init__(self, name: str):
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"collector-bench-{name}-"))
        self._stops: list[Callable[[], None]] = []

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        while self._stops:
            stop = self._stops.pop()
            try:
                stop()
            except Exception as error:  # noqa: BLE001 - keep stopping the others
                print(f"  ! while stopping: {type(error).__name__}: {error}", file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)

    def on_close(self, stop: Callable[[], None]) -> None:
        self._stops.append(stop)

    def env(self, **extra: str) -> dict[str, str]:
        pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": pythonpath, **extra}

    def start(self, name: str, argv: list[str], stop_grace_seconds: float = STOP_GRACE_SECONDS, **env: str) -> Service:
        service = Service(name, argv, self.env(**env), self.dir / f"{name}.log", stop_grace_seconds)
        self.on_close(service.stop)
        return service.start()

    # the pieces

    def redis(self) -> EmbeddedRedis:
        """An embedded redis-server (AOF on, noeviction, as in production) on a free port."""
        server = EmbeddedRedis(data_dir=str(self.dir / "redis"))
        self.on_close(server.stop)
        return server.start()

    def gunicorn(
        self,
        name: str,
        app: str,
        workers: int,
        worker_class: str = SERVE_WORKER_CLASS,
        threads: int = 1,
        keepalive: int = SERVE_KEEPALIVE_SECONDS,
        **env: str,
    ) -> tuple[Service, str]:
        """``gunicorn app`` on a free port; returns the service and its base URL once ``/`` answers."""
        port = free_port()
        argv = [
            sys.executable, "-m", "gunicorn",
            "--bind", f"{HOST}:{port}",
            "--workers", str(workers),
            "--worker-class", worker_class,
            "--threads", str(threads),
            "--keep-alive", str(keepalive),
            "--graceful-timeout", "5",
            app,
        ]  # fmt: skip
        url = f"http://{HOST}:{port}"
        return self.start(name, argv, **env).wait_http(url + "/"), url

    def collector(self, config: Path, redis_url: str, workers: int) -> tuple[Service, str]:
        """``collector serve`` (gunicorn, sync workers) on a free port; returns it and its base URL when ready."""
        port = free_port()
        metrics_dir = self.dir / f"metrics-{port}"
        metrics_dir.mkdir()
        argv = [
            sys.executable, "-m", "collector", "serve",
            "--config", str(config), "--host", HOST, "--port", str(port), "--workers", str(workers),
        ]  # fmt: skip
        service = self.start("collector", argv, REDIS_URL=redis_url, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
        url = f"http://{HOST}:{port}"
        return service.wait_http(url + "/readyz"), url

    def worker(self, config: Path, redis_url: str, name: str = "worker", registered: int = len(DESTINATIONS)) -> Service:
        """``collector worker`` (a supervisor, its dispatcher thread, one delivery process per destination),
        once its delivery processes are registered with RQ and waiting for jobs: once RQ knows ``registered``
        workers in all (more than one destination's worth when other supervisors already run)."""
        argv = [sys.executable, "-m", "collector", "worker", "--config", str(config)]
        service = self.start(name, argv, WORKER_STOP_GRACE_SECONDS, REDIS_URL=redis_url)
        redis = Redis.from_url(redis_url)
        expected = registered

        def registered_enough() -> bool:
            return len(Worker.all(connection=redis)) >= expected

        service.wait_for(registered_enough, "its delivery processes registered with RQ")
        time.sleep(0.5)  # a worker registers just before its first BLPOP
        return service
