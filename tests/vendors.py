"""Stand-ins for the vendors: real HTTP servers on 127.0.0.1 that judge requests by the vendors' specs.

Each stand-in records every request (headers, body, the spec's verdict, the
status it answered), answers as the vendor would (401 for a wrong key, 422
or 400 for a body the spec rejects, 200 otherwise), and can be told to fail:
``fail_next(n, status, retry_after=...)``, ``fail_for(seconds, status)``,
``hang_next(n, seconds)``. They speak HTTP/1.1 keep-alive, as the worker's
pooled client expects.
"""

from __future__ import annotations

import collections
import json
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from collector.demo.vendor_spec import VendorSpec

SPECS = Path(__file__).resolve().parent / "specs"


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any
    spec_errors: list[str]
    status: int
    received_at: float


@dataclass
class _Fault:
    status: int | None
    remaining: int | None = None  # requests left, or None when timed
    until: float | None = None  # monotonic deadline, or None when counted
    retry_after: float | None = None
    body: Any = None
    hang_seconds: float = 0.0

    def applies(self) -> bool:
        if self.until is not None:
            return time.monotonic() < self.until
        return self.remaining is None or self.remaining > 0



class _VendorServer(ThreadingHTTPServer):
    """A listen backlog like a real server's: the standard library's 5 drops the SYNs of a worker's
    16 simultaneous connects on a busy machine, and each then waits out the client's 1 s connect timeout."""

    request_queue_size = 128

class VendorStandIn:
    """A recording, spec-checking HTTP server for one vendor endpoint."""

    path = "/"
    spec_file = ""

    def __init__(self, api_key: str):
        self._api_key = api_key
        self._spec = VendorSpec.load(SPECS / self.spec_file)
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._arrivals = 0
        self._faults: collections.deque[_Fault] = collections.deque()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._rate_limit: tuple[int, float] | None = None  # (requests allowed per second, Retry-After)
        self._window = (0, 0)  # (the current second, requests in it)

    # lifecycle

    def start(self) -> "VendorStandIn":
        self._server = _VendorServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "VendorStandIn":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_port}{self.path}"

    # faults and keys

    def fail_next(self, n: int, status: int, body: Any = None, retry_after: float | None = None) -> None:
        with self._lock:
            self._faults.append(_Fault(status, remaining=n, retry_after=retry_after, body=body))

    def fail_for(self, seconds: float, status: int, body: Any = None, retry_after: float | None = None) -> None:
        with self._lock:
            self._faults.append(_Fault(status, until=time.monotonic() + seconds, retry_after=retry_after, body=body))

    def hang_next(self, n: int, seconds: float) -> None:
        with self._lock:
            self._faults.append(_Fault(None, remaining=n, hang_seconds=seconds))

    def always(self, status: int) -> None:
        with self._lock:
            self._faults.append(_Fault(status))

    def limit_rate(self, per_second: int, retry_after: float = 1) -> None:
        """Allow ``per_second`` requests in each second of the clock; answer 429 with Retry-After beyond."""
        with self._lock:
            self._rate_limit = (per_second, retry_after)

    def reset_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._rate_limit = None

    def set_api_key(self, api_key: str) -> None:
        self._api_key = api_key

    # records

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def arrivals(self) -> int:
        """Requests that arrived, including those still being answered (a hang is recorded only when it ends)."""
        with self._lock:
            return self._arrivals

    @property
    def accepted(self) -> list[ReceivedRequest]:
        return [request for request in self.requests if 200 <= request.status < 300]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._arrivals = 0

    def wait_for(self, condition: int | Callable[[list[ReceivedRequest]], bool], timeout: float = 10.0) -> list[ReceivedRequest]:
        """Poll until ``condition`` accepted requests arrived (or the predicate holds); return them."""
        deadline = time.monotonic() + timeout
        while True:
            requests = self.requests
            done = condition(requests) if callable(condition) else len(self.accepted) >= condition
            if done:
                return self.accepted
            if time.monotonic() > deadline:
                statuses = [request.status for request in requests]
                raise AssertionError(f"{type(self).__name__}: waited {timeout}s for {condition!r}; got statuses {statuses}")
            time.sleep(0.05)

    def event_ids(self) -> list[str]:
        raise NotImplementedError

    def duplicates(self) -> list[str]:
        counts = collections.Counter(self.event_ids())
        return sorted(event_id for event_id, count in counts.items() if count > 1)

    # answering

    def _over_rate(self) -> _Fault | None:
        """The 429 a request over the rate limit gets (counted in a fixed one-second window)."""
        with self._lock:
            if self._rate_limit is None:
                return None
            allowed, retry_after = self._rate_limit
            second = int(time.monotonic())
            count = self._window[1] + 1 if self._window[0] == second else 1
            self._window = (second, count)
        return _Fault(429, retry_after=retry_after) if count > allowed else None

    def _next_fault(self) -> _Fault | None:
        over = self._over_rate()
        if over is not None:
            return over
        with self._lock:
            while self._faults and not self._faults[0].applies():
                self._faults.popleft()
            if not self._faults:
                return None
            fault = self._faults[0]
            if fault.remaining is not None:
                fault.remaining -= 1
            return fault

    def authorized(self, headers: dict[str, str]) -> bool:
        raise NotImplementedError

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], Any, list[str], Any]:
        """Status, headers, JSON answer, spec errors, parsed body."""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        errors = self._spec.body_errors(self.path_in_spec(), parsed) if parsed is not None else ["<body>: not JSON"]
        fault = self._next_fault()
        if fault is not None and fault.hang_seconds:
            self._stopping.wait(fault.hang_seconds)
        elif fault is not None and fault.status is not None:
            extra = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else {}
            return fault.status, extra, fault.body or self.error_body(fault.status, "scripted fault"), errors, parsed
        if path != self.path or method != "POST":
            return 404, {}, self.error_body(404, "not found"), errors, parsed
        if not self.authorized(headers):
            return 401, {}, self.error_body(401, "Unauthorized"), errors, parsed
        if errors:
            return self.invalid_status, {}, self.invalid_body(errors), errors, parsed
        return 200, {}, self.success_body(parsed), errors, parsed

    def path_in_spec(self) -> str:
        return self.path

    invalid_status = 400

    def error_body(self, status: int, message: str) -> Any:
        return {"error": {"code": status, "message": message}, "success": False}

    def invalid_body(self, errors: list[str]) -> Any:
        return self.error_body(self.invalid_status, "; ".join(errors))

    def success_body(self, parsed: Any) -> Any:
        return {}

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's API
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                received = time.monotonic()
                with stand_in._lock:
                    stand_in._arrivals += 1
                status, extra, answer, errors, parsed = stand_in.answer("POST", self.path.split("?")[0], headers, body)
                stand_in._record(ReceivedRequest("POST", self.path, headers, body, parsed, errors, status, received))
                payload = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout fired); that is the point of a hang

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        return Handler


class DepictStandIn(VendorStandIn):
    """Depict ``POST /create-events``: ``X-API-KEY``, JSON array of ``Event``, 422 on invalid."""

    path = "/create-events"
    spec_file = "depict-create-events.openapi.yaml"
    invalid_status = 422

    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("x-api-key") == self._api_key

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes):  # noqa: ANN201
        status, extra, answer, errors, parsed = super().answer(method, path, headers, body)
        if status == 200 and not headers.get("content-type", "").startswith("application/json"):
            return 422, {}, self.invalid_body(["<body>: Content-Type must be application/json"]), errors, parsed
        return status, extra, answer, errors, parsed

    def error_body(self, status: int, message: str) -> Any:
        return {"detail": message}

    def invalid_body(self, errors: list[str]) -> Any:
        return {"detail": [{"loc": ["body", *error.split(":")[0].split("/")], "msg": error, "type": "value_error"} for error in errors]}

    def event_ids(self) -> list[str]:
        return [event.get("deduplication_id") for request in self.accepted for event in request.json]


class CommerceStandIn(VendorStandIn):
    """Drivly Commerce ``POST /api/webevents``: ``Authorization: <scheme> <key>``, one ``NewWebEvent``."""

    path = "/api/webevents"
    spec_file = "commerce-webevents.openapi.yaml"
    invalid_status = 400

    def __init__(self, api_key: str, auth_scheme: str = "Bearer"):
        super().__init__(api_key)
        self._auth_scheme = auth_scheme

    def path_in_spec(self) -> str:
        return "/webevents"

    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") == f"{self._auth_scheme} {self._api_key}"

    def success_body(self, parsed: Any) -> Any:
        alphabet = string.ascii_lowercase + string.digits
        data = {"id": "wev_" + "".join(secrets.choice(alphabet) for _ in range(12)), **parsed}
        return {"data": data, "success": True}

    def event_ids(self) -> list[str]:
        return [request.json.get("id") for request in self.accepted]
