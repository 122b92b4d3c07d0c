"""What a delivery attempt came to, how an HTTP answer is classed, and when to try again.

A vendor's answer decides what happens to a delivery: 2xx is delivered;
network errors, timeouts, 408, 429 and 5xx are worth another try; any other
4xx (400, 401, 403, 404, 422) will not get better by repeating the same
request, so the delivery goes to the dead letters with the vendor's reason.

A delivery that cannot even be made into an HTTP request (a header value
or a string that cannot be encoded) is dead at once, with the error as its
reason: repeating it would fail the same way for ever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import aiohttp
import orjson

from collector.config.defaults import RETRY_JITTER
from collector.config.schema import DeliveryPolicy

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429})
MAX_KEPT_BODY_CHARS = 1000
# Read a little more of an answer than is kept, so that a key it echoes at the cut is masked whole before cutting.
_READ_ANSWER_CHARS = MAX_KEPT_BODY_CHARS + 512
_READ_ANSWER_BYTES = 64 * 1024  # of a vendor's answer, at most; a longer one costs its connection, not memory
USER_AGENT = "first-party-collector/0.1"


class Outcome(str, Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    UNSENT = "unsent"  # not tried: the process was told to stop; the job puts it back in its outbox


@dataclass(frozen=True)
class Attempt:
    """One delivery's attempt: the outcome, the vendor's status and (truncated) answer."""

    delivery: dict[str, Any]
    outcome: Outcome
    status: int | None = None
    answer: str = ""
    retry_after: float | None = None
    seconds: float | None = None  # how long the vendor took to answer, when a request was made
    sent_at: float | None = None  # the wall clock when the request went (the console's event page)
    earlier: tuple[Attempt, ...] = ()  # the same delivery's tries before this one within the job (a 429 waited out)

    @property
    def reason(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else self.answer or "no answer"


def describe_error(error: BaseException) -> str:
    """An exception as a dead letter's reason: its type and message, kept short."""
    return f"{type(error).__name__}: {error}"[:MAX_KEPT_BODY_CHARS]


def outcome_of_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in RETRYABLE_STATUSES or status >= 500:
        return Outcome.RETRY
    return Outcome.DEAD


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds; HTTP dates are rare from APIs and ignored."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def retry_delay(attempt: int, policy: DeliveryPolicy, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter for the ``attempt``-th retry; a vendor's Retry-After wins if longer."""
    interval = min(policy.retry_base_seconds * 2 ** max(attempt - 1, 0), policy.retry_max_interval_seconds)
    jittered = interval * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
    return max(jittered, retry_after or 0.0)


def encode_body(body: Any) -> bytes:
    """A delivery's body as JSON, as the vendors take it (UTF-8, compact).

    orjson for speed; what it refuses (an integer past 64 bits) goes through
    the standard library, which also says plainly what cannot be encoded at
    all (a lone surrogate: ``UnicodeEncodeError``).
    """
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """Header values as HTTP carries them: ASCII without line breaks, or ``UnicodeEncodeError``/``ValueError``."""
    for name, value in headers.items():
        value.encode("ascii")
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} holds a line break")
    return headers


class VendorClient:
    """Posts a delivery's body to one destination's URL; subclasses say which headers go along."""

    name = "vendor"

    def __init__(self, url: str):
        self.url = url

    def headers_for(self, delivery: dict[str, Any]) -> dict[str, str]:
        raise NotImplementedError

    async def send(self, http: aiohttp.ClientSession, delivery: dict[str, Any]) -> list[Attempt]:
        """One request; subclasses may split a refused batch into several (hence a list)."""
        return [await self.post(http, delivery)]

    async def post(self, http: aiohttp.ClientSession, delivery: dict[str, Any]) -> Attempt:
        try:
            body = encode_body(delivery["body"])
            headers = check_headers({**self.headers_for(delivery), "Content-Type": "application/json"})
        except (UnicodeError, TypeError, ValueError) as error:
            log.warning("%s delivery %s cannot be sent: %s", self.name, delivery["id"], type(error).__name__)
            return Attempt(delivery, Outcome.DEAD, answer=f"the delivery cannot be sent as HTTP: {describe_error(error)}")
        sent_at, started = time.time(), time.perf_counter()
        try:
            async with http.post(self.url, data=body, headers=headers, allow_redirects=False) as response:
                answer = await response.content.read(_READ_ANSWER_BYTES)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            log.debug("%s delivery %s: %s", self.name, delivery["id"], type(error).__name__)
            return Attempt(delivery, Outcome.RETRY, answer=type(error).__name__, seconds=time.perf_counter() - started, sent_at=sent_at)
        log.debug("%s delivery %s: HTTP %s", self.name, delivery["id"], response.status)
        return Attempt(
            delivery,
            outcome_of_status(response.status),
            status=response.status,
            answer=answer.decode("utf-8", "replace")[:_READ_ANSWER_CHARS],
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            seconds=time.perf_counter() - started,
            sent_at=sent_at,
        )
