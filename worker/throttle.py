"""How many requests one destination may have in flight, and how fast: adapted to what the vendor answers.

Each site's destination gets one :class:`Throttle` per delivery process. It
is on by default, and it only ever slows sending below the configured
``concurrency``:

- **Requests in flight** start at ``concurrency``. A timeout, a failed
  connection or a 503 halves them (at most once per :data:`CALM_SECONDS`,
  since one overload fails many requests at once); every good answer adds a
  little back (:data:`GROWTH_PER_ROUND_TRIP` per round trip's worth of
  answers) up to ``concurrency``.
- **Rate.** There is none until the vendor says "too fast" (429, or 503).
  Then requests are paced at :data:`RATE_CUT` of what the vendor accepted
  over the last second (or of the rate already set, when lower), at most
  once per :data:`CALM_SECONDS`; each calm second adds :data:`RATE_GROWTH`.
  After :data:`RATE_KEPT_SECONDS` without a refusal the rate is dropped.

Requests in flight bound a slow vendor (throughput = in flight / latency);
the rate bounds a fast one with a quota, where even one request in flight
would exceed it. A vendor's ``Retry-After`` is for the request that carried
it: the job sends that delivery again no sooner (``worker.sender``).

Everything here runs on the delivery process's event loop thread, so it
needs no lock.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

CALM_SECONDS = 1.0
RATE_CUT = 0.85
RATE_GROWTH = 0.05  # per calm second, compounded
MIN_RATE = 1.0  # requests per second
RATE_KEPT_SECONDS = 60.0  # by then it has grown 18-fold: it no longer binds
GROWTH_PER_ROUND_TRIP = 4.0
ACCEPTED_WINDOW_SECONDS = 1.0


class Signal:
    """What one answer says about the vendor's load."""

    GOOD = "good"
    TOO_FAST = "too fast"  # 429
    OVERLOADED = "overloaded"  # 503: too fast and too many at once
    CONGESTED = "congested"  # a timeout or a failed connection
    NEUTRAL = "neutral"  # another refusal or error: says nothing about load


def signal_of(status: int | None, network_error: bool) -> str:
    if network_error:
        return Signal.CONGESTED
    if status is None:
        return Signal.NEUTRAL
    if 200 <= status < 300:
        return Signal.GOOD
    if status == 429:
        return Signal.TOO_FAST
    if status == 503:
        return Signal.OVERLOADED
    return Signal.NEUTRAL


@dataclass
class ThrottleState:
    """What a throttle allows now, for logs and the tests."""

    in_flight: int
    limit: float
    rate: float | None


class Throttle:
    def __init__(self, concurrency: int, clock: Callable[[], float] = time.monotonic):
        self.max_in_flight = concurrency
        self.limit = float(concurrency)
        self.rate: float | None = None
        self.in_flight = 0
        self._clock = clock
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._woken = 0  # waiters told to go that have not yet taken their place
        self._next_send_at = 0.0
        self._last_cut = float("-inf")
        self._last_growth = clock()
        self._accepted: deque[float] = deque()

    # taking and giving back a place

    async def acquire(self) -> None:
        """Wait for a place among the requests in flight (first come, first served), then for the rate's next slot."""
        if self.in_flight + self._woken >= self.limit or self._waiters:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._wake()
            try:
                await waiter
            except asyncio.CancelledError:
                self._give_up(waiter)
                raise
            self._woken -= 1
        self.in_flight += 1
        delay = self._pace()
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self.release()
                raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _give_up(self, waiter: asyncio.Future[None]) -> None:
        """A waiter was cancelled: drop it, or, when it had been woken already, hand its turn on."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            return
        self._woken -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight + self._woken < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1

    def _pace(self) -> float:
        """Seconds this request waits for its slot under the rate (0 when no rate is set)."""
        if self.rate is None:
            return 0.0
        now = self._clock()
        self._grow_rate(now)
        if self.rate is None:
            return 0.0
        slot = max(now, self._next_send_at)
        self._next_send_at = slot + 1.0 / self.rate
        return slot - now

    # learning from answers

    def observe(self, signal: str) -> None:
        now = self._clock()
        if signal == Signal.GOOD:
            self._accepted.append(now)
            self._forget_accepted_before(now - ACCEPTED_WINDOW_SECONDS)
            self.limit = min(float(self.max_in_flight), self.limit + GROWTH_PER_ROUND_TRIP / max(self.limit, 1.0))
            self._grow_rate(now)
            self._wake()
            return
        if signal == Signal.NEUTRAL or now - self._last_cut < CALM_SECONDS:
            return
        self._last_cut = now
        self._last_growth = now
        if signal in (Signal.TOO_FAST, Signal.OVERLOADED):
            self.rate = max(MIN_RATE, min(self.rate or float("inf"), self._accepted_rate(now)) * RATE_CUT)
        if signal in (Signal.OVERLOADED, Signal.CONGESTED):
            self.limit = max(1.0, min(self.limit, float(max(self.in_flight, 1))) / 2)

    def _accepted_rate(self, now: float) -> float:
        """Answers/s the vendor accepted over the last second."""
        self._forget_accepted_before(now - ACCEPTED_WINDOW_SECONDS)
        return len(self._accepted) / ACCEPTED_WINDOW_SECONDS

    def _forget_accepted_before(self, moment: float) -> None:
        while self._accepted and self._accepted[0] < moment:
            self._accepted.popleft()

    def _grow_rate(self, now: float) -> None:
        elapsed = now - self._last_growth
        if self.rate is None or elapsed < CALM_SECONDS:
            return
        self._last_growth = now
        self.rate *= (1 + RATE_GROWTH) ** elapsed
        if now - self._last_cut > RATE_KEPT_SECONDS:
            self.rate = None

    def state(self) -> ThrottleState:
        return ThrottleState(self.in_flight, self.limit, self.rate)
