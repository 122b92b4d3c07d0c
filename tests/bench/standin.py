"""Fast vendor stand-ins for the benchmark: answer 200 at once and log which event ids arrived, and when.

The test suite's stand-ins (``tests/vendors.py``) check every request
against the vendors' OpenAPI specs with jsonschema, in one Python process:
good judges, slow servers. Measured against them, the worker and a bare
HTTP client would both be capped by the stand-in and their ratio would mean
nothing. These stand-ins do NOT validate requests (the test suite's do):
they answer 200 with a canned JSON body and note the ids.

One WSGI app serves both vendors' paths under gunicorn with gthread workers,
which keep connections alive as the worker's pooled client expects. Each
gunicorn worker process appends ``<time.time()> <vendor> <id>`` lines to its
own file, one ``write`` per request; :class:`Receipts` reads the files
incrementally. Depict ids are the events' ``deduplication_id`` (the
snippet's event id), Commerce ids the Web Event ``id`` (``wev_...``, see
``collector.mapping.commerce.web_event_id``). Times are wall-clock, comparable
with a browser's ``Date.now()`` on the same machine.

A vendor can be taken down: while the file ``down-<vendor>`` exists in the
receipts folder (:meth:`StandIns.take_down`, :meth:`StandIns.bring_up`),
that vendor's path answers ``503`` and notes nothing, as a vendor in an
outage would (the footprint stage measures the backlog it leaves).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.bench.stack import Service, Stack

DEPICT_PATH = "/create-events"
COMMERCE_PATH = "/api/webevents"
VENDORS = ("depict", "commerce")
RECEIPTS_DIR_ENV = "BENCH_RECEIPTS_DIR"
WORKERS = 2
THREADS = 8
KEEPALIVE_SECONDS = 75  # longer than any pause of the benchmark: clients never meet a closing connection
NOTE = "bench stand-ins answer 200 without validating (the test suite's stand-ins check every request against the specs)"

_DOWN_ANSWER = b'{"error":"bench stand-in is down"}'
_DEPICT_ANSWER = b"{}"
_COMMERCE_ANSWER = b'{"data":{"id":"wev_bench0000000","name":"bench"},"success":true}'
_log: tuple[int, int] | None = None  # (pid, file descriptor) of this process's receipts file


def _log_fd() -> int:
    global _log
    if _log is None or _log[0] != os.getpid():
        path = Path(os.environ[RECEIPTS_DIR_ENV]) / f"receipts-{os.getpid()}.log"
        _log = (os.getpid(), os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    return _log[1]


def _received(vendor: str, ids: Iterable[str]) -> None:
    now = f"{time.time():.6f}"
    lines = "".join(f"{now} {vendor} {event_id}\n" for event_id in ids)
    if lines:
        os.write(_log_fd(), lines.encode())


def _down(vendor: str) -> bool:
    return os.path.exists(os.path.join(os.environ[RECEIPTS_DIR_ENV], f"down-{vendor}"))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The WSGI app: POST to either vendor path is logged and answered 200 (503 while it is down); anything else 200."""
    path = environ.get("PATH_INFO", "")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    answer = b"ok"
    vendor = "depict" if path == DEPICT_PATH else "commerce" if path == COMMERCE_PATH else None
    if vendor and _down(vendor):
        start_response("503 Service Unavailable", [("Content-Type", "application/json"),
                                                   ("Content-Length", str(len(_DOWN_ANSWER)))])  # fmt: skip
        return [_DOWN_ANSWER]
    if path == DEPICT_PATH:
        _received("depict", (event.get("deduplication_id", "") for event in json.loads(body)))
        answer = _DEPICT_ANSWER
    elif path == COMMERCE_PATH:
        _received("commerce", [json.loads(body).get("id", "")])
        answer = _COMMERCE_ANSWER
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]


class Receipts:
    """What the stand-ins received since the last :meth:`reset`: first arrival time of each id, per vendor."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._directory = directory
        self._offsets: dict[Path, int] = {}
        self._first: dict[str, dict[str, float]] = {vendor: {} for vendor in VENDORS}
        self._total: dict[str, int] = dict.fromkeys(VENDORS, 0)

    def _read_new(self) -> None:
        for path in sorted(self._directory.glob("receipts-*.log")):
            offset = self._offsets.get(path, 0)
            with open(path, "rb") as log:
                log.seek(offset)
                data = log.read()
            complete = data.rfind(b"\n") + 1  # a line being written is read next time
            self._offsets[path] = offset + complete
            for line in data[:complete].decode().splitlines():
                at, vendor, event_id = line.split(" ", 2)
                self._total[vendor] += 1
                self._first[vendor].setdefault(event_id, float(at))

    def reset(self) -> None:
        """Forget what arrived so far; later calls see only what arrives after this."""
        self._read_new()
        self._first = {vendor: {} for vendor in VENDORS}
        self._total = dict.fromkeys(VENDORS, 0)

    def count(self, vendor: str) -> int:
        """Distinct ids received."""
        self._read_new()
        return len(self._first[vendor])

    def duplicates(self, vendor: str) -> int:
        """Ids received more than once (counted per extra arrival)."""
        self._read_new()
        return self._total[vendor] - len(self._first[vendor])

    def received_at(self, vendor: str, event_id: str) -> float | None:
        self._read_new()
        return self._first[vendor].get(event_id)

    def last_arrival(self) -> float:
        self._read_new()
        return max((at for vendor in VENDORS for at in self._first[vendor].values()), default=0.0)


@dataclass
class StandIns:
    """Both vendors' stand-ins, one gunicorn, and what they received."""

    url: str
    receipts: Receipts
    service: "Service"

    @property
    def depict_url(self) -> str:
        return self.url + DEPICT_PATH

    @property
    def commerce_url(self) -> str:
        return self.url + COMMERCE_PATH

    def take_down(self, vendor: str) -> None:
        """From now on ``vendor``'s path answers 503."""
        (self.receipts.directory / f"down-{vendor}").touch()

    def bring_up(self, vendor: str) -> None:
        (self.receipts.directory / f"down-{vendor}").unlink(missing_ok=True)


def start_standins(stack: "Stack") -> StandIns:
    directory = stack.dir / "receipts"
    directory.mkdir()
    service, url = stack.gunicorn(
        "standins", "tests.bench.standin:app", WORKERS, worker_class="gthread", threads=THREADS, keepalive=KEEPALIVE_SECONDS,
        **{RECEIPTS_DIR_ENV: str(directory)},
    )  # fmt: skip
    return StandIns(url, Receipts(directory), service)
