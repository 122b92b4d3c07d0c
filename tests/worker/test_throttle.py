"""The per-destination throttle: it slows sending when a vendor says so, and gives the speed back when it stops."""

from __future__ import annotations

import asyncio

import pytest

from worker.delivery import Attempt, Outcome
from worker.sender import wait_in_job
from worker.throttle import CALM_SECONDS, RATE_CUT, RATE_KEPT_SECONDS, Signal, Throttle, signal_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def accepted(throttle: Throttle, clock: Clock, answers: int, over_seconds: float = 1.0) -> None:
    """``answers`` good answers spread evenly over ``over_seconds``."""
    for _ in range(answers):
        clock.now += over_seconds / answers
        throttle.observe(Signal.GOOD)


def test_a_429_paces_the_destination_below_what_the_vendor_accepted():
    """Told "too fast" after 200 answers in a second, it sends at 85% of that; a burst of 429s cuts once."""
    clock = Clock()
    throttle = Throttle(256, clock)
    accepted(throttle, clock, 200)
    throttle.observe(Signal.TOO_FAST)
    assert throttle.rate == pytest.approx(200 * RATE_CUT, rel=0.02)
    throttle.observe(Signal.TOO_FAST)
    assert throttle.rate == pytest.approx(200 * RATE_CUT, rel=0.02), "one overload fails many requests: it cuts once"
    assert throttle.limit == 256, "a 429 is about the rate, not the requests in flight"


def test_calm_seconds_grow_the_rate_back_and_drop_it_after_a_calm_minute():
    """Without refusals the rate grows each second; after a minute without one it is dropped."""
    clock = Clock()
    throttle = Throttle(256, clock)
    accepted(throttle, clock, 100)
    throttle.observe(Signal.TOO_FAST)
    cut = throttle.rate
    assert cut is not None
    accepted(throttle, clock, 170, over_seconds=CALM_SECONDS * 2)  # at the rate set
    assert throttle.rate is not None and throttle.rate > cut
    clock.now += RATE_KEPT_SECONDS / 2
    throttle.observe(Signal.GOOD)
    assert throttle.rate is not None
    clock.now += RATE_KEPT_SECONDS / 2
    throttle.observe(Signal.GOOD)
    assert throttle.rate is None


def test_timeouts_and_503s_halve_requests_in_flight_and_good_answers_give_them_back_up_to_the_setting():
    """Congestion halves what may be in flight (once per calm second); good answers grow it back, never past the setting."""
    clock = Clock()
    throttle = Throttle(64, clock)
    throttle.in_flight = 64
    throttle.observe(Signal.CONGESTED)
    assert throttle.limit == 32
    throttle.observe(Signal.CONGESTED)
    assert throttle.limit == 32
    clock.now += CALM_SECONDS
    throttle.observe(Signal.OVERLOADED)
    assert throttle.limit == 16 and throttle.rate is not None
    accepted(throttle, clock, 5000, over_seconds=60)
    assert throttle.limit == 64


def test_no_more_requests_start_than_the_limit_allows_and_a_release_lets_the_next_in(run_async):
    """With a limit of 2, a third sender waits until one of the two is done, then goes, first come first served."""

    async def scenario() -> list[str]:
        throttle = Throttle(2)
        order: list[str] = []
        await throttle.acquire()
        await throttle.acquire()

        async def third() -> None:
            await throttle.acquire()
            order.append("third went")

        waiting = asyncio.ensure_future(third())
        await asyncio.sleep(0.05)
        order.append(f"in flight {throttle.in_flight}")
        throttle.release()
        await asyncio.wait_for(waiting, 1)
        order.append(f"in flight {throttle.in_flight}")
        return order

    assert run_async(scenario) == ["in flight 2", "third went", "in flight 2"]


def test_a_cancelled_waiter_does_not_keep_a_place(run_async):
    """A send cancelled while it waits (its job timed out) takes no place and passes its turn on."""

    async def scenario() -> int:
        throttle = Throttle(1)
        await throttle.acquire()
        cancelled = asyncio.ensure_future(throttle.acquire())
        behind = asyncio.ensure_future(throttle.acquire())
        await asyncio.sleep(0.01)
        cancelled.cancel()
        throttle.release()
        await asyncio.wait_for(behind, 1)
        return throttle.in_flight

    assert run_async(scenario) == 1


@pytest.mark.parametrize(
    ("status", "network_error", "signal"),
    [(200, False, Signal.GOOD), (429, False, Signal.TOO_FAST), (503, False, Signal.OVERLOADED), (None, True, Signal.CONGESTED),
     (500, False, Signal.NEUTRAL), (401, False, Signal.NEUTRAL)],
)  # fmt: skip
def test_what_each_answer_says_about_the_vendors_load(status, network_error, signal):
    """429 is "too fast", 503 "overloaded", a timeout "congested"; a 500 or a 401 says nothing about load."""
    assert signal_of(status, network_error) == signal


@pytest.mark.parametrize(
    ("status", "retry_after", "wait"),
    [(429, 1.0, 1.0), (429, None, 1.0), (503, 2.0, 2.0), (503, None, None), (429, 60.0, None), (500, 1.0, None)],
)
def test_which_refusals_are_sent_again_within_the_job(status, retry_after, wait):
    """A 429 (or a 503 with Retry-After) asking for a short wait is sent again in the job; a long wait, a bare 503
    (a vendor that is down) or a 500 go to RQ's retries with their backoff and the breaker."""
    attempt = Attempt({"id": "d"}, Outcome.RETRY, status=status, retry_after=retry_after)
    assert wait_in_job(attempt) == wait
