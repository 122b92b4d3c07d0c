"""Sending a job's deliveries: one asyncio event loop per delivery process, aiohttp, a throttle per destination.

At a vendor's real latency a process delivers as many requests per second
as it keeps in flight, divided by the latency. Sixteen threads carried about
100 Commerce events/s at 150 ms, and more threads made httpx's pool scan
itself to death; one event loop keeps hundreds of requests in flight for a
fifth of a millisecond of CPU each (``docs/delivery.md`` has the figures).

The RQ job runs in the process's main thread, as RQ's signal handling and
job timeout need, and hands its deliveries to the loop thread
(:meth:`Sender.send_all`), waiting for their attempts. On the loop, lanes
take the deliveries one after another: each takes a place from its
destination's :class:`Throttle` (``concurrency`` requests on the wire at
most, as a bare client's "256 in flight"), sends, gives the place back with
the answer and, once the vendor said 2xx, waits for its mark in the ledger
before it takes the next delivery. There are a quarter more lanes than
places, so the marks being written (a few ms) do not idle the vendor's
connections, and a killed process resends at most what
:func:`unrecorded_at_most` says: ``concurrency`` requests on the wire and a
quarter as many answered whose marks were on their way.

A vendor that says "too fast" with a short ``Retry-After`` (429, or 503
with the header) gets that delivery again within the job, no sooner than
it asked; any other failure worth retrying goes back to RQ's retries, with
their backoff and the breaker (``worker.jobs``). A delivery not started by
the job's deadline, or once the process is told to stop, is not sent: the
job puts it back in its outbox.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiohttp

from collector.config.schema import DeliveryPolicy
from worker.delivery import USER_AGENT, Attempt, Outcome, VendorClient, describe_error
from worker.ledger import DeliveryLedger, GroupCommit
from worker.throttle import Throttle, signal_of

log = logging.getLogger(__name__)

THROTTLED_STATUSES = frozenset({429, 503})
TRIES_IN_JOB = 4  # requests for one throttled delivery within a job, before it goes to RQ's retries
MAX_WAIT_IN_JOB_SECONDS = 5.0  # a longer Retry-After goes to RQ's retries (and the breaker)
WAIT_WITHOUT_RETRY_AFTER_SECONDS = 1.0
CONNECTIONS_KEPT_SECONDS = 30.0
RECORDING_SHARE = 0.25  # lanes beyond the places on the wire: sends answered, their ledger mark on its way

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (it halves the loop's CPU per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def unrecorded_at_most(concurrency: int) -> int:
    """Requests a delivery process may have sent to one destination and not yet recorded: those on the
    wire and those answered whose marks are being written. A killed process resends at most these."""
    return concurrency + math.ceil(concurrency * RECORDING_SHARE)


def wait_in_job(attempt: Attempt) -> float | None:
    """Seconds to wait before sending a throttled delivery again within its job; None: not within the job."""
    if attempt.outcome is not Outcome.RETRY or attempt.status not in THROTTLED_STATUSES:
        return None
    if attempt.status == 503 and attempt.retry_after is None:
        return None  # a vendor that is down, not one that says "slower": RQ's backoff and the breaker
    wait = attempt.retry_after if attempt.retry_after is not None else WAIT_WITHOUT_RETRY_AFTER_SECONDS
    return wait if wait <= MAX_WAIT_IN_JOB_SECONDS else None


class Sender:
    """A delivery process's event loop thread, its HTTP connections, and one throttle per site's destination."""

    def __init__(
        self, clients: dict[tuple[str, str], VendorClient], policy: DeliveryPolicy, ledger: DeliveryLedger, stopping: threading.Event
    ):
        self.clients = clients
        self.stopping = stopping
        self.throttles = {key: Throttle(policy.concurrency) for key in clients}
        self._policy = policy
        self._marks_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._marks = GroupCommit(ledger, self._marks_thread)
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sender", daemon=True)
        self._thread.start()
        self._http: aiohttp.ClientSession = self._run(self._open_session())

    async def _open_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=CONNECTIONS_KEPT_SECONDS, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=self._policy.timeout_seconds, sock_connect=self._policy.connect_timeout_seconds),
            headers={"User-Agent": USER_AGENT},
            auto_decompress=True,
        )

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop thread and wait for it; if the wait is cut short (RQ's job timeout), cancel it."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def send_all(self, job_key: str, deliveries: list[dict[str, Any]], deadline: float) -> list[Attempt]:
        """Send a job's deliveries concurrently; each one's attempts, in order.

        ``deadline`` (``time.monotonic()``) is when the job stops starting
        requests. Raises when a success cannot be recorded in the ledger (the
        job then fails as a whole and RQ retries it); the job's other sends
        are cancelled then.
        """
        if not self._thread.is_alive():
            raise RuntimeError("the sender's event loop is not running")
        return self._run(self._send_all(job_key, deliveries, deadline))

    async def _send_all(self, job_key: str, deliveries: list[dict[str, Any]], deadline: float) -> list[Attempt]:
        """The deliveries, sent by as many lanes as their throttles could let through at once.

        A lane takes the next delivery, sends it and takes another: no task
        and no wait per delivery while the throttle has room, which is most
        of a busy loop's work at a vendor's latency. A delivery the vendor
        asked to send again later waits in a task of its own, so its lane
        goes on with the others.
        """
        results: list[list[Attempt]] = [[] for _ in deliveries]
        queue = deque(enumerate(deliveries))
        later: list[asyncio.Future[None]] = []
        lanes = [asyncio.ensure_future(self._lane(job_key, queue, results, later, deadline)) for _ in range(self._lanes_for(deliveries))]
        try:
            await _all_or_first_error(lanes)
            await _all_or_first_error(later)
        except BaseException:
            await _cancel(later)
            raise
        return [attempt for attempts in results for attempt in attempts]

    def _lanes_for(self, deliveries: list[dict[str, Any]]) -> int:
        destinations = {(delivery["site"], delivery["destination"]) for delivery in deliveries}
        room = sum(unrecorded_at_most(self.throttles[key].max_in_flight) if key in self.throttles else 1 for key in destinations)
        return max(1, min(len(deliveries), room))

    async def _lane(
        self,
        job_key: str,
        queue: deque[tuple[int, dict[str, Any]]],
        results: list[list[Attempt]],
        later: list[asyncio.Future[None]],
        deadline: float,
    ) -> None:
        while queue:
            index, delivery = queue.popleft()
            attempts = await self._deliver(job_key, delivery, deadline)
            if all(wait_in_job(attempt) is None for attempt in attempts):
                results[index] = attempts
            else:
                later.append(asyncio.ensure_future(self._settle_later(job_key, index, attempts, results, deadline)))

    async def _settle_later(self, job_key: str, index: int, attempts: list[Attempt], results: list[list[Attempt]], deadline: float) -> None:
        results[index] = [part for attempt in attempts for part in await self._again_if_throttled(job_key, attempt, deadline, tries=1)]

    async def _deliver(self, job_key: str, delivery: dict[str, Any], deadline: float) -> list[Attempt]:
        """One delivery's attempts (several when a client splits a refused batch); its mark in the ledger."""
        key = (delivery["site"], delivery["destination"])
        client = self.clients.get(key)
        if client is None:
            reason = f"site {delivery['site']!r} has no {delivery['destination']} destination in the worker's config"
            return [Attempt(delivery, Outcome.DEAD, answer=reason)]
        throttle = self.throttles[key]
        await throttle.acquire()
        try:
            if self.stopping.is_set() or time.monotonic() > deadline:
                return [Attempt(delivery, Outcome.UNSENT)]
            attempts = await self._send_one(client, delivery)
            for attempt in attempts:
                throttle.observe(signal_of(attempt.status, attempt.outcome is Outcome.RETRY and attempt.status is None))
        finally:
            throttle.release()
        delivered = [attempt.delivery for attempt in attempts if attempt.outcome is Outcome.DELIVERED]
        if delivered:
            await self._marks.mark_delivered(job_key, delivered)
        return attempts

    async def _again_if_throttled(self, job_key: str, attempt: Attempt, deadline: float, tries: int) -> list[Attempt]:
        """A throttled delivery sent again after its wait, while the job may; its final attempts."""
        wait = wait_in_job(attempt)
        if wait is None or tries >= TRIES_IN_JOB or time.monotonic() + wait > deadline or self.stopping.is_set():
            return [attempt]
        await asyncio.sleep(wait)
        attempts = [replace(again, earlier=(*attempt.earlier, attempt)) for again in await self._deliver(job_key, attempt.delivery, deadline)]
        return [part for again in attempts for part in await self._again_if_throttled(job_key, again, deadline, tries + 1)]

    async def _send_one(self, client: VendorClient, delivery: dict[str, Any]) -> list[Attempt]:
        """Whatever goes wrong in sending one delivery is its outcome, never the job's: an error no one
        foresaw dead-letters it with the error as its reason, and the job's other deliveries go on."""
        try:
            return await client.send(self._http, delivery)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # classified: a delivery must settle, whatever it holds
            log.exception("%s delivery %s failed unexpectedly; dead-lettered", delivery["destination"], delivery["id"])
            return [Attempt(delivery, Outcome.DEAD, answer=f"unexpected error in sending: {describe_error(error)}")]

    def close(self) -> None:
        """Close the connections, stop the loop thread and the ledger's writer thread."""
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._http.close(), self._loop).result(timeout=5)
            except Exception as error:  # closing: nothing is left to deliver
                log.debug("closing the HTTP session: %s", type(error).__name__)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
        self._marks_thread.shutdown(wait=True)


async def _all_or_first_error(tasks: list[asyncio.Future[Any]]) -> None:
    """Wait for every task; on the first error (or when cancelled) cancel the rest, and raise."""
    if not tasks:
        return
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        await _cancel(tasks)
        raise
    failures = [task.exception() for task in done if not task.cancelled() and task.exception() is not None]
    if failures:  # each one read: asyncio logs a traceback for every task error nobody retrieved
        await _cancel(list(pending))
        raise failures[0]  # type: ignore[misc]


async def _cancel(tasks: list[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

