"""The delivery baseline at a vendor's latency: a bare aiohttp client with a fixed number of requests in flight.

One child process per destination (as ``collector worker`` has), each an
``aiohttp.ClientSession`` on uvloop (when installed) whose connector allows
``in_flight`` connections, and ``in_flight`` coroutines that each post one
request after another, for a set time. The requests are the worker's own
(``Request``: its vendor clients' URL and headers, the deliveries' bodies);
each body is serialised per request, as the worker's client does
(``json.dumps``, compact). The list is cycled if it runs out before the time
does (the stand-in counts answers, not distinct ids).

Each child notes the CPU seconds it used (``time.process_time``) over the
measured window, whose wall-clock start the bench hands it, so that the
bench can set its rate per CPU second beside the worker's.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

IN_FLIGHT = 256
READY_SECONDS = 60.0


@dataclass(frozen=True)
class Request:
    url: str
    body: Any
    headers: dict[str, str]


@dataclass(frozen=True)
class Sent:
    """What one child did: answers by kind over its whole run, CPU seconds inside the measured window."""

    destination: str
    ok: int
    failed: int
    window_cpu_seconds: float


def install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401

        return "uvloop"
    except ImportError:
        return "asyncio's default loop"


async def _post_all(requests: list[Request], in_flight: int, stop_at: float, window: tuple[float, float]) -> tuple[int, int, float]:
    import aiohttp

    counts = {"ok": 0, "failed": 0}
    next_index = iter(range(10**12))
    cpu: dict[str, float] = {}
    loop = asyncio.get_running_loop()

    def note(name: str) -> None:
        cpu[name] = time.process_time()

    loop.call_later(max(window[0] - time.time(), 0.0), note, "start")
    loop.call_later(max(window[1] - time.time(), 0.0), note, "end")
    connector = aiohttp.TCPConnector(limit=in_flight, limit_per_host=in_flight, keepalive_timeout=75)
    timeout = aiohttp.ClientTimeout(total=30)

    async def one_after_another(session: aiohttp.ClientSession) -> None:
        while time.time() < stop_at:
            request = requests[next(next_index) % len(requests)]
            data = json.dumps(request.body, separators=(",", ":"), ensure_ascii=False).encode()
            try:
                async with session.post(request.url, data=data, headers=request.headers) as answer:
                    await answer.read()
                    counts["ok" if 200 <= answer.status < 300 else "failed"] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                counts["failed"] += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(one_after_another(session) for _ in range(in_flight)))
    while "end" not in cpu:  # the window outlived the sends: nothing more to count
        await asyncio.sleep(0.05)
    return counts["ok"], counts["failed"], cpu["end"] - cpu.get("start", cpu["end"])


def post_for(destination: str, requests: list[Request], in_flight: int, ready: Any, times: Any, results: Any) -> None:
    """In a child process: wait for the bench's ``(start, window start, window end, stop)``, then send."""
    install_uvloop()
    ready.wait(timeout=READY_SECONDS)
    start, window_start, window_end, stop_at = times.get(timeout=READY_SECONDS)
    time.sleep(max(start - time.time(), 0.0))
    ok, failed, cpu = asyncio.run(_post_all(requests, in_flight, stop_at, (window_start, window_end)))
    results.put(Sent(destination, ok, failed, cpu))


def run(requests: dict[str, list[Request]], in_flight: int, warm_seconds: float, window_seconds: float) -> tuple[float, list[Sent]]:
    """One child per destination, all starting together; returns the window's wall-clock start and what each sent.

    The children send for ``warm_seconds`` (connections opened, the pace set)
    plus ``window_seconds`` (measured) plus a short tail, so that the window
    ends while every request slot is still busy."""
    context = multiprocessing.get_context("spawn")
    ready, times, results = context.Barrier(len(requests) + 1), context.Queue(), context.Queue()
    children = [context.Process(target=post_for, args=(d, r, in_flight, ready, times, results), name=f"bare-aiohttp-{d}")
                for d, r in requests.items()]  # fmt: skip
    for child in children:
        child.start()
    try:
        ready.wait(timeout=READY_SECONDS)
        start = time.time() + 0.2
        window_start = start + warm_seconds
        schedule = (start, window_start, window_start + window_seconds, window_start + window_seconds + 0.5)
        for _ in children:
            times.put(schedule)
        sent = [results.get(timeout=warm_seconds + window_seconds + 60) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
                child.join(timeout=5)
    return window_start, sent
