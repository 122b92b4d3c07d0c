"""Redis stalled by SIGSTOP (it hangs instead of refusing), under `collector serve` and `collector worker`.

A stopped redis-server still accepts TCP connections (the kernel does), so
only timeouts tell the collector it is gone. The test measures how fast
``/collect``, ``/healthz`` and ``/readyz`` answer meanwhile, how soon
``/collect`` takes events again after SIGCONT, and that every event ever
answered 202 (before, during with the snippet's retries, after) reaches
Depict. The figures are printed on the terminal.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.factories import make_event
from tests.stack import ORIGIN, SITE, ServeStack

COLLECT_BOUND_SECONDS = 4.0  # the design target is 2 s
HEALTHZ_BOUND_SECONDS = 0.5
READYZ_BOUND_SECONDS = 4.0
RECOVERY_BOUND_SECONDS = 15.0
CLIENT_TIMEOUT_SECONDS = 8.0  # longer than every bound, so a slow answer is measured, not cut off
SNIPPET_DEADLINE_SECONDS = 40.0
DELIVERY_SECONDS = 30.0
HEADERS = {"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ServeStack]:
    with ServeStack(tmp_path / "stack") as deployment:
        yield deployment


@dataclass
class Timed:
    status: int | None  # None: no answer within the client's timeout
    seconds: float
    retry_after: str | None = None
    error: str = ""

    def __str__(self) -> str:
        if self.status is None:
            return f"no answer in {self.seconds:.2f} s ({self.error})"
        extra = f", Retry-After {self.retry_after}" if self.retry_after is not None else ""
        return f"{self.status} in {self.seconds:.3f} s{extra}"


def timed(method: str, url: str, body: str | None = None, timeout: float = CLIENT_TIMEOUT_SECONDS) -> Timed:
    started = time.monotonic()
    try:
        answer = httpx.request(method, url, content=body, headers=HEADERS, timeout=timeout)
    except httpx.HTTPError as error:
        return Timed(None, time.monotonic() - started, error=type(error).__name__)
    return Timed(answer.status_code, time.monotonic() - started, answer.headers.get("Retry-After"))


def batch(event: dict) -> str:
    return json.dumps({"site": SITE, "events": [event]})


def send_like_snippet(stack: ServeStack, event: dict, deadline: float) -> bool:
    """POST until 202 as the snippet does: after a 503 wait Retry-After (at most 1 s here), after no answer try again."""
    while time.monotonic() < deadline:
        answer = timed("POST", f"{stack.url}/collect", batch(event), timeout=min(CLIENT_TIMEOUT_SECONDS, max(deadline - time.monotonic(), 0.1)))
        if answer.status == 202:
            return True
        if answer.status is not None and answer.status != 503:
            raise AssertionError(f"/collect answered {answer} to an honest event")
        time.sleep(min(float(answer.retry_after or 1), 1.0) if answer.status == 503 else 0.2)
    return False


def events(count: int, tag: str) -> list[dict]:
    return [make_event("add_to_cart", props={"product_id": f"{tag}-{index}"}) for index in range(count)]


def test_a_stalled_redis_gets_fast_answers_and_loses_no_acknowledged_event(stack: ServeStack, capsys: pytest.CaptureFixture[str]) -> None:
    """With Redis SIGSTOPped, /collect says 503 + Retry-After fast, /healthz 200 at once, /readyz 503; after SIGCONT nothing answered 202 is lost."""
    acknowledged: set[str] = set()
    before = events(5, "before")
    for event in before:
        if send_like_snippet(stack, event, time.monotonic() + 10):
            acknowledged.add(event["id"])

    during = events(5, "during")
    during_acknowledged: list[str] = []

    def snippet_during_the_stall() -> None:
        deadline = time.monotonic() + SNIPPET_DEADLINE_SECONDS
        for event in during:
            if send_like_snippet(stack, event, deadline):
                during_acknowledged.append(event["id"])

    probe = make_event("page_view")
    snippet = threading.Thread(target=snippet_during_the_stall, daemon=True)
    os.kill(stack.redis_pid, signal.SIGSTOP)
    try:
        collect = timed("POST", f"{stack.url}/collect", batch(probe))
        healthz = timed("GET", f"{stack.url}/healthz")
        readyz = timed("GET", f"{stack.url}/readyz")
        snippet.start()
        time.sleep(2)  # the snippet's retries meet the stall
    finally:
        os.kill(stack.redis_pid, signal.SIGCONT)
    resumed = time.monotonic()
    if collect.status == 202:
        acknowledged.add(probe["id"])

    again = make_event("page_view")
    recovered = send_like_snippet(stack, again, resumed + RECOVERY_BOUND_SECONDS)
    recovery = time.monotonic() - resumed
    if recovered:
        acknowledged.add(again["id"])
    snippet.join(timeout=SNIPPET_DEADLINE_SECONDS + CLIENT_TIMEOUT_SECONDS)
    acknowledged.update(during_acknowledged)
    after = events(5, "after")
    for event in after:
        if send_like_snippet(stack, event, time.monotonic() + 10):
            acknowledged.add(event["id"])

    deadline = time.monotonic() + DELIVERY_SECONDS
    while not acknowledged <= set(stack.depict.event_ids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    lost = acknowledged - set(stack.depict.event_ids())

    with capsys.disabled():
        print(
            "\nstalled redis (SIGSTOP):"
            f"\n  POST /collect  {collect}"
            f"\n  GET /healthz   {healthz}"
            f"\n  GET /readyz    {readyz}"
            f"\n  after SIGCONT  /collect 202 again in {recovery:.2f} s" + ("" if recovered else " (NOT within the bound)") +
            f"\n  events: {len(before) + len(during) + len(after) + 2} sent, {len(acknowledged)} answered 202 "
            f"({len(during_acknowledged)} of {len(during)} sent during the stall), {len(acknowledged) - len(lost)} delivered, {len(lost)} lost,"
            f" {len(stack.depict.duplicates())} duplicates at Depict"
        )  # fmt: skip

    problems = []
    if collect.status != 503 or collect.retry_after is None or collect.seconds >= COLLECT_BOUND_SECONDS:
        problems.append(f"POST /collect during the stall: {collect}; wanted 503 with Retry-After in under {COLLECT_BOUND_SECONDS} s")
    if healthz.status != 200 or healthz.seconds >= HEALTHZ_BOUND_SECONDS:
        problems.append(f"GET /healthz during the stall: {healthz}; wanted 200 in under {HEALTHZ_BOUND_SECONDS} s")
    if readyz.status != 503 or readyz.seconds >= READYZ_BOUND_SECONDS:
        problems.append(f"GET /readyz during the stall: {readyz}; wanted 503 in under {READYZ_BOUND_SECONDS} s")
    if not recovered:
        problems.append(f"/collect did not answer 202 within {RECOVERY_BOUND_SECONDS} s of SIGCONT")
    if len(during_acknowledged) != len(during):
        problems.append(f"only {len(during_acknowledged)} of {len(during)} events sent during the stall were ever answered 202")
    if lost:
        problems.append(f"{len(lost)} events answered 202 never reached Depict: {sorted(lost)}")
    assert not problems, "\n".join(problems)
