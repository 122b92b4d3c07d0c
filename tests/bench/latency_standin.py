"""A vendor stand-in that answers after a set delay, and can rate-limit: asyncio, so slow answers cost nothing.

``standin.py``'s gunicorn stand-ins answer at once from 16 threads; a
vendor that takes 150 ms per answer would cap them at about 100 answers/s.
This one is an ``aiohttp.web`` server (on uvloop when it is installed):
a request waiting for its answer is a sleeping coroutine, so thousands can
wait at once for no CPU. Both vendors' paths are served by ``PROCESSES``
processes on one port (``SO_REUSEPORT``: the kernel spreads connections
among them): the first, started through ``Stack.start`` (so stopped by its
PID), starts the others with ``multiprocessing`` and stops them on SIGTERM.

Per vendor, :class:`VendorSettings` says:

- ``delay_ms``: every answer, 200 or 429, is sent that long after the request
  arrived (the vendor's latency: network and processing alike);
- ``rate``: if set, the vendor accepts at most that many requests per
  wall-clock second, counted across all processes: a **fixed one-second
  window** (``int(time.time())``), as a vendor's "N requests per second"
  usually is; the requests beyond it get ``429`` with ``Retry-After: 1`` and
  are not noted as received.

The settings live in ``settings.json`` in the stand-in's folder and may
change while it runs (:meth:`LatencyStandIn.configure` writes them and waits
until every process has taken them), so that one stand-in serves every row
of the delivery stage and a vendor can slow down under a running worker.

Each process appends to two files in the folder, one ``write`` per request:

- ``receipts-<pid>.log``: ``<time> <vendor> <id>`` per event accepted, the
  line format of ``standin.py``, so :class:`tests.bench.standin.Receipts`
  reads them (Depict ids: each event's ``deduplication_id``; Commerce: the
  Web Event ``id``);
- ``answers-<pid>.log``: ``<time> <vendor> <status> <events>`` per request
  answered (200 or 429), read by :class:`Answers` for rates over a time
  window and the share of 429s.

Times are when the request arrived (``time.time()``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.bench.standin import COMMERCE_PATH, DEPICT_PATH, VENDORS, Receipts

if TYPE_CHECKING:
    from tests.bench.stack import Service, Stack

PROCESSES = 2
BACKLOG = 2048  # listen backlog per process: a client opening 256+ connections at once meets no refusal
KEEPALIVE_SECONDS = 75
SETTINGS_FILE = "settings.json"
SETTINGS_POLL_SECONDS = 0.1
STATUS_OK = 200
STATUS_LIMITED = 429
PATHS = {DEPICT_PATH: "depict", COMMERCE_PATH: "commerce"}
_ANSWERS = {"depict": b"{}", "commerce": b'{"data":{"id":"wev_bench0000000","name":"bench"},"success":true}'}
_LIMITED = b'{"error":"rate limited by the bench stand-in"}'


@dataclass(frozen=True)
class VendorSettings:
    delay_ms: float = 0.0
    rate: int | None = None  # accepted requests per wall-clock second, all processes together; None: no limit


@dataclass(frozen=True)
class Settings:
    depict: VendorSettings = field(default_factory=VendorSettings)
    commerce: VendorSettings = field(default_factory=VendorSettings)
    version: int = 0

    def of(self, vendor: str) -> VendorSettings:
        return self.depict if vendor == "depict" else self.commerce

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Settings":
        data = json.loads(text)
        return cls(VendorSettings(**data["depict"]), VendorSettings(**data["commerce"]), data["version"])

    def describe(self) -> str:
        def one(vendor: str) -> str:
            s = self.of(vendor)
            return f"{vendor} {s.delay_ms:g} ms" + (f", at most {s.rate} requests/s" if s.rate else "")

        return "; ".join(one(vendor) for vendor in VENDORS)


# the server, in each process


class Window:
    """A fixed one-second window per vendor, shared by the processes: [second, count] per vendor in one array."""

    def __init__(self, shared: Any, lock: Any):
        self._shared = shared
        self._lock = lock

    def admit(self, vendor: str, rate: int) -> bool:
        slot = 2 * VENDORS.index(vendor)
        second = int(time.time())
        with self._lock:
            if self._shared[slot] != second:
                self._shared[slot], self._shared[slot + 1] = second, 0
            if self._shared[slot + 1] >= rate:
                return False
            self._shared[slot + 1] += 1
            return True


class Server:
    """One process's handlers, settings and log files."""

    def __init__(self, directory: Path, window: Window):
        self.directory = directory
        self.window = window
        self.settings = Settings()
        self._announced = False
        pid = os.getpid()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._receipts = os.open(directory / f"receipts-{pid}.log", flags, 0o644)
        self._answers = os.open(directory / f"answers-{pid}.log", flags, 0o644)

    def reload(self) -> None:
        """Take ``settings.json`` if it changed, then say which version this process runs (``ready-<pid>``)."""
        settings = Settings.from_json((self.directory / SETTINGS_FILE).read_text())
        if settings == self.settings and self._announced:
            return
        self.settings, self._announced = settings, True
        ready = self.directory / f"ready-{os.getpid()}"
        ready.with_suffix(".tmp").write_text(str(self.settings.version))
        ready.with_suffix(".tmp").replace(ready)

    async def watch(self) -> None:
        while True:
            self.reload()
            await asyncio.sleep(SETTINGS_POLL_SECONDS)

    async def vendor(self, request: Any) -> Any:
        from aiohttp import web

        arrived = time.time()
        name = PATHS[request.path]
        body = await request.read()
        settings = self.settings.of(name)
        admitted = settings.rate is None or self.window.admit(name, settings.rate)
        if settings.delay_ms > 0:
            await asyncio.sleep(settings.delay_ms / 1000)
        if not admitted:
            os.write(self._answers, f"{arrived:.6f} {name} {STATUS_LIMITED} 0\n".encode())
            return web.Response(status=STATUS_LIMITED, body=_LIMITED, content_type="application/json",
                                headers={"Retry-After": "1"})  # fmt: skip
        ids = _ids(name, body)
        stamp = f"{arrived:.6f}"
        os.write(self._receipts, "".join(f"{stamp} {name} {event_id}\n" for event_id in ids).encode())
        os.write(self._answers, f"{stamp} {name} {STATUS_OK} {len(ids)}\n".encode())
        return web.Response(body=_ANSWERS[name], content_type="application/json")

    async def other(self, _: Any) -> Any:
        from aiohttp import web

        return web.Response(text="ok")


def _ids(vendor: str, body: bytes) -> list[str]:
    data = json.loads(body)
    if vendor == "depict":
        return [str(event.get("deduplication_id", "")) for event in data]
    return [str(data.get("id", ""))]


def serve(directory: Path, port: int, shared: Any, lock: Any) -> None:
    """Run one process's server until SIGTERM."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(Server(directory, Window(shared, lock)), port))


async def _serve(server: Server, port: int) -> None:
    from aiohttp import web

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post(DEPICT_PATH, server.vendor)
    app.router.add_post(COMMERCE_PATH, server.vendor)
    app.router.add_route("*", "/{tail:.*}", server.other)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_SECONDS, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True, backlog=BACKLOG).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    server.reload()
    watcher = asyncio.create_task(server.watch())
    await stop.wait()
    watcher.cancel()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """The first process: starts the others, serves, and on SIGTERM stops them."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.latency_standin")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=PROCESSES)
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    lock, shared = context.Lock(), context.Array("q", 2 * len(VENDORS), lock=False)
    others = [context.Process(target=serve, args=(args.dir, args.port, shared, lock), daemon=True)
              for _ in range(args.processes - 1)]  # fmt: skip
    for other in others:
        other.start()
    try:
        serve(args.dir, args.port, shared, lock)
    finally:
        for other in others:
            other.terminate()
        for other in others:
            other.join(timeout=5)
    return 0


# the bench's side


@dataclass(frozen=True)
class Count:
    requests: int
    events: int


class Answers:
    """Every answer the stand-in gave: per vendor and status, the arrival times and event counts."""

    def __init__(self, directory: Path):
        self._directory = directory
        self._offsets: dict[Path, int] = {}
        self._records: dict[tuple[str, int], list[tuple[float, int]]] = {}

    def _read_new(self) -> None:
        for path in sorted(self._directory.glob("answers-*.log")):
            offset = self._offsets.get(path, 0)
            with open(path, "rb") as log:
                log.seek(offset)
                data = log.read()
            complete = data.rfind(b"\n") + 1
            self._offsets[path] = offset + complete
            for line in data[:complete].decode().splitlines():
                at, vendor, status, events = line.split(" ")
                self._records.setdefault((vendor, int(status)), []).append((float(at), int(events)))

    def count(self, vendor: str, status: int, start: float, end: float) -> Count:
        """Requests answered with ``status`` (and the events they held) that arrived in [start, end)."""
        self._read_new()
        inside = [events for at, events in self._records.get((vendor, status), []) if start <= at < end]
        return Count(len(inside), sum(inside))

    def last(self, vendor: str, status: int = STATUS_OK) -> float:
        self._read_new()
        return max((at for at, _ in self._records.get((vendor, status), [])), default=0.0)


@dataclass
class LatencyStandIn:
    """The running stand-in: its base URL, what it received, its settings."""

    url: str
    directory: Path
    service: "Service"
    processes: int
    receipts: Receipts
    answers: Answers
    settings: Settings = field(default_factory=Settings)

    @property
    def depict_url(self) -> str:
        return self.url + DEPICT_PATH

    @property
    def commerce_url(self) -> str:
        return self.url + COMMERCE_PATH

    def configure(self, depict: VendorSettings, commerce: VendorSettings) -> None:
        """New settings for both vendors; returns once every process runs them."""
        self.settings = Settings(depict, commerce, self.settings.version + 1)
        staging = self.directory / (SETTINGS_FILE + ".tmp")
        staging.write_text(self.settings.to_json())
        staging.replace(self.directory / SETTINGS_FILE)
        self.service.wait_for(self._all_on_current, f"settings version {self.settings.version} in every process")

    def _all_on_current(self) -> bool:
        versions = list(_ready_versions(self.directory))
        return len(versions) >= self.processes and all(version == self.settings.version for version in versions)


def _ready_versions(directory: Path) -> Iterator[int]:
    for path in directory.glob("ready-*"):
        if path.suffix != ".tmp":
            try:
                yield int(path.read_text() or -1)
            except (OSError, ValueError):
                yield -1


def start_latency_standin(stack: "Stack", processes: int = PROCESSES) -> LatencyStandIn:
    """The stand-in on a free port, both vendors answering at once and unlimited until :meth:`configure`."""
    from collector.storage.redis_server import free_port

    directory = stack.dir / "latency-standin"
    directory.mkdir()
    (directory / SETTINGS_FILE).write_text(Settings().to_json())
    port = free_port()
    argv = [sys.executable, "-m", "tests.bench.latency_standin", "--dir", str(directory), "--port", str(port),
            "--processes", str(processes)]  # fmt: skip
    service = stack.start("latency-standin", argv)
    standin = LatencyStandIn(f"http://127.0.0.1:{port}", directory, service, processes, Receipts(directory), Answers(directory))
    service.wait_for(standin._all_on_current, f"{processes} processes serving")
    service.wait_http(standin.url + "/")
    return standin


if __name__ == "__main__":
    sys.exit(main())
