"""A production-shaped deployment for one test module: `collector serve` (gunicorn) and `collector worker`.

:class:`ServeStack` starts, all on 127.0.0.1 and each stopped by its PID at
the end: an embedded ``redis-server`` on a free port with its own data
folder, fresh Depict and Commerce stand-ins, a config TOML in the given
folder, ``python -m collector serve --workers 2`` and ``python -m collector
worker`` (both from the repository, not an installed copy, each writing a
log file). It is up once ``/readyz`` answers 200.

:func:`http_exchange` talks HTTP/1.1 over a raw socket, for what httpx will
not send: raw bytes in header values, a chunked body without Content-Length.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
from redis import Redis

from collector.config.defaults import DEFAULT_ACCOUNT_FIELDS
from collector.storage.redis_server import EmbeddedRedis, free_port
from tests.conftest import COMMERCE_KEY, CONSENT_SITE, DEPICT_KEY, ORIGIN, REPO, SITE
from tests.conftest import config_toml as shared_config_toml
from tests.vendors import CommerceStandIn, DepictStandIn
from worker.dead_letters import DeadLetter, DeadLetters

READY_SECONDS = 45
SEND_DEADLINE_SECONDS = 60


def send_as_the_snippet(url: str, events: list[dict], site: str = SITE) -> bool:
    """POST ``events`` to ``url``'s /collect as the snippet does: retry 503 and connection errors until
    acknowledged (at most ``SEND_DEADLINE_SECONDS``); True when 202, AssertionError on any other answer."""
    body = json.dumps({"site": site, "events": events})
    deadline = time.monotonic() + SEND_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            answer = httpx.post(f"{url}/collect", content=body, headers={"Content-Type": "text/plain", "Origin": ORIGIN}, timeout=10)
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        if answer.status_code == 202:
            return True
        if answer.status_code != 503:
            raise AssertionError(f"/collect answered {answer.status_code}: {answer.text}")
        time.sleep(min(float(answer.headers.get("Retry-After", "1")), 1.0))
    return False
STOP_SECONDS = 15


def config_toml(depict_url: str, commerce_url: str) -> str:
    """The tests' sites with the default Web Event budget and account fields, and a 20 s retry window."""
    return shared_config_toml(
        depict_url, commerce_url, web_events_per_request=10, retry_for_seconds=20, account_fields=tuple(DEFAULT_ACCOUNT_FIELDS)
    )


@dataclass
class Answer:
    """An HTTP answer as it came off the wire (header names lower-cased), and how long it took."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    seconds: float
    raw: bytes = b""
    error: str = ""  # a transport failure, when status is 0

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:
        if self.status == 0:
            return f"no answer ({self.error}) after {self.seconds:.2f} s"
        return f"HTTP {self.status} {self.body[:600]!r}"


def _decode_chunked(data: bytes) -> bytes:
    body, rest = b"", data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    return body


def http_exchange(
    base_url: str,
    method: str,
    path: str,
    headers: Iterable[tuple[str, str | bytes]] = (),
    body: bytes = b"",
    chunked: bool = False,
    chunk_size: int = 16 * 1024,
    timeout: float = 10.0,
) -> Answer:
    """One request on a fresh connection (``Connection: close``), header values written as given.

    The body is sent from a thread while the answer is read, so a server
    that answers (413) before reading the whole body is still heard.
    """
    parts = urlsplit(base_url)
    head = [f"{method} {path} HTTP/1.1".encode(), f"Host: {parts.netloc}".encode()]
    for name, value in headers:
        head.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode("latin-1")))
    if chunked:
        head.append(b"Transfer-Encoding: chunked")
    elif body or method in ("POST", "PUT"):
        head.append(f"Content-Length: {len(body)}".encode())
    head.append(b"Connection: close")
    started = time.monotonic()
    try:
        sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    except OSError as error:
        return Answer(0, [], b"", time.monotonic() - started, error=repr(error))

    def send() -> None:
        try:
            sock.sendall(b"\r\n".join(head) + b"\r\n\r\n")
            if not chunked:
                sock.sendall(body)
                return
            for offset in range(0, len(body), chunk_size):
                piece = body[offset : offset + chunk_size]
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server stopped reading; its answer is what counts

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    raw, error = b"", ""
    deadline = started + timeout
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = sock.recv(65536)
            if not data:
                break
            raw += data
            if _complete(raw):
                break
    except OSError as failure:
        error = repr(failure)
    finally:
        seconds = time.monotonic() - started
        sock.close()
        sender.join(timeout=5)
    if b"\r\n\r\n" not in raw:
        return Answer(0, [], b"", seconds, raw, error or "timed out or closed before an answer")
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    answer_headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        answer_headers.append((name.strip().lower(), value.strip()))
    if any(key == "transfer-encoding" and "chunked" in value.lower() for key, value in answer_headers):
        payload = _decode_chunked(payload)
    return Answer(status, answer_headers, payload, seconds, raw, error)


def _complete(raw: bytes) -> bool:
    """Whether ``raw`` holds a whole answer with a Content-Length (else read until the server closes)."""
    head, found, payload = raw.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(payload) >= int(value.strip())
    return False


@dataclass
class ServeStack:
    """`collector serve` + `collector worker` on their own Redis and stand-ins; everything stopped by PID on close()."""

    tmp: Path
    serve_workers: int = 2
    worker_processes: int = 1  # `collector worker` supervisors on the same Redis
    env: dict[str, str] = field(default_factory=dict)
    # the config TOML, from the stand-ins' URLs (depict, commerce): by default the tests' shared sites
    make_config: Callable[[str, str], str] = config_toml

    def __post_init__(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.serve_log = self.tmp / "serve.log"
        self.worker_log = self.tmp / "worker.log"
        self.config_path = self.tmp / "collector.toml"
        self._redis_server: EmbeddedRedis | None = None
        self._processes: list[subprocess.Popen[bytes]] = []
        self._stand_ins: list[DepictStandIn | CommerceStandIn] = []
        self.serve: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    # lifecycle

    def start(self) -> "ServeStack":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self._redis_server = EmbeddedRedis(port=free_port(), data_dir=str(self.tmp / "redis")).start()
        self.depict = DepictStandIn(DEPICT_KEY).start()
        self._stand_ins.append(self.depict)
        self.commerce = CommerceStandIn(COMMERCE_KEY).start()
        self._stand_ins.append(self.commerce)
        self.config_path.write_text(self.make_config(self.depict.url, self.commerce.url))
        metrics_dir = self.tmp / "metrics"
        metrics_dir.mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            **self.env,
            "REDIS_URL": self.redis_url,
            "TEST_DEPICT_KEY": DEPICT_KEY,
            "TEST_COMMERCE_KEY": COMMERCE_KEY,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("COLLECTOR_CONFIG", None)
        self.redis = Redis.from_url(self.redis_url, socket_timeout=10, socket_connect_timeout=5)
        serve_command = ["serve", "--config", str(self.config_path), "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.serve_workers)]
        self.serve = self._launch(serve_command, self.serve_log)
        self.worker = self._launch(["worker", "--config", str(self.config_path)], self.worker_log)
        for number in range(2, self.worker_processes + 1):
            self._launch(["worker", "--config", str(self.config_path)], self.tmp / f"worker-{number}.log")
        self._wait_until_ready()

    def _launch(self, arguments: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "collector", *arguments],
                cwd=REPO, env=self.env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self._processes.append(process)
        return process

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            for process, log in ((self.serve, self.serve_log), (self.worker, self.worker_log)):
                assert process is not None
                if process.poll() is not None:
                    raise RuntimeError(f"{' '.join(process.args[2:4])} exited with {process.returncode}:\n{self.tail(log)}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"/readyz did not answer 200 within {READY_SECONDS} s:\n{self.tail(self.serve_log)}")

    def close(self) -> None:
        """SIGTERM to serve and worker (SIGKILL to what is left after a while), then Redis and the stand-ins."""
        if self._redis_server is not None and self._redis_server.pid:
            try:
                os.kill(self._redis_server.pid, signal.SIGCONT)  # in case a test left it stopped
            except ProcessLookupError:
                pass
        family = {process.pid: _descendants(process.pid) for process in self._processes}
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            for child in family[process.pid]:
                kill_if_alive(child)
        self._processes.clear()
        if self._redis_server is not None:
            self._redis_server.stop()
            self._redis_server = None
        for stand_in in self._stand_ins:
            stand_in.stop()
        self._stand_ins.clear()

    def __enter__(self) -> "ServeStack":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    # what tests read

    @property
    def redis_url(self) -> str:
        assert self._redis_server is not None, "start() the stack first"
        return self._redis_server.url

    @property
    def redis_pid(self) -> int:
        assert self._redis_server is not None and self._redis_server.pid is not None, "start() the stack first"
        return self._redis_server.pid

    def dead_letters(self) -> list[DeadLetter]:
        return list(DeadLetters(self.redis))

    @staticmethod
    def tail(log: Path, size: int = 4000) -> str:
        try:
            return log.read_bytes()[-size:].decode("utf-8", "replace")
        except FileNotFoundError:
            return "<no log>"


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def kill_if_alive(process: psutil.Process) -> None:
    """SIGKILL a child we started if it outlived its parent's shutdown (psutil checks the PID was not reused)."""
    try:
        process.wait(timeout=2)
    except psutil.TimeoutExpired:
        try:
            process.kill()
        except psutil.Error:
            pass
    except psutil.Error:
        pass
