"""The RQ job: send one job's deliveries concurrently; raise so RQ retries what failed.

A job holds up to ``deliveries_per_job`` deliveries of one site and
destination. Events already recorded as delivered are skipped, so a retried
or recovered job resends only what failed. Answers that repeating cannot fix
(400, 401, 403, 404, 422) go to the dead letters at once. Answers worth
another try (network errors, timeouts, 408, 429, 5xx) make the job raise;
RQ then runs it again after :func:`worker.delivery.retry_delay` (exponential,
with jitter, never sooner than the vendor's Retry-After), until a delivery
is older than ``retry_for_seconds`` and is dead-lettered instead.

Nothing a delivery holds can make a job retry past ``retry_for_seconds``:
one delivery's unforeseen error dead-letters that delivery alone
(``WorkerRuntime.send``), and a job that fails as a whole (Redis lost while
recording, the job's time limit) is retried by RQ only until its oldest
delivery is past the window; then its deliveries are dead-lettered with the
error as the reason.

A process told to stop sends nothing more: the job's deliveries not yet
started go back to their outbox (``Outcome.UNSENT``), so stopping waits for
the requests in flight, not for the rest of the job. So do those a
throttled destination could not start within the job's send window.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import suppress
from typing import Any

from redis import Redis, RedisError
from rq import get_current_job

from collector.config.schema import DeliveryPolicy
from collector.storage.delivery_stats import JobFigures, answer_class, record_job
from collector.storage.outbox import wake_dispatchers
from worker.breaker import Breaker
from worker.delivery import Attempt, Outcome, describe_error, retry_delay
from worker.dispatch import job_timeout_seconds
from worker.outbox_return import return_to_outbox
from worker.runtime import current_runtime

log = logging.getLogger(__name__)

JOB_END_MARGIN_SECONDS = 15  # for the job's bookkeeping after its last answer


class DeliveriesFailed(Exception):
    """Some deliveries of the job should be tried again later."""


def _schedule_next_try(delay: float) -> int:
    """Tell RQ when to run this job again; return which attempt that will be."""
    job = get_current_job()
    if job is None:
        return 1
    attempt = int(job.meta.get("attempt", 1)) + 1
    job.meta["attempt"] = attempt
    job.retry_intervals = [max(int(round(delay)), 1)]
    job.save_meta()
    return attempt


def _current_attempt() -> int:
    job = get_current_job()
    return int(job.meta.get("attempt", 1)) if job is not None else 1


def _job_key(deliveries: list[dict[str, Any]]) -> str:
    """The RQ job's id; outside a job (a test calling the function), one made from the deliveries."""
    job = get_current_job()
    if job is not None:
        return job.id
    return hashlib.sha256(",".join(delivery["id"] for delivery in deliveries).encode()).hexdigest()[:32]


def send_window_seconds(policy: DeliveryPolicy) -> float:
    """How long a job keeps starting requests: its RQ time limit less one request's own and a margin.

    What a throttled destination could not send by then goes back to the
    outbox for the next job, instead of RQ killing the job mid-send.
    """
    request = policy.timeout_seconds + policy.connect_timeout_seconds
    return max(job_timeout_seconds(policy) - request - JOB_END_MARGIN_SECONDS, request)


def _expired(attempt: Attempt, retry_for_seconds: float, now: float) -> bool:
    return now - float(attempt.delivery.get("queued_at") or now) > retry_for_seconds


def forward_deliveries(deliveries: list[dict[str, Any]]) -> dict[str, int]:
    """Send the job's deliveries; then let the dispatcher queue the next job (it keeps only a few waiting)."""
    try:
        return _forward(deliveries)
    except DeliveriesFailed:
        raise
    except Exception as error:
        return _give_up_when_expired(deliveries, error)
    finally:
        with suppress(RedisError):  # Redis gone: the job's own error says so; the dispatcher polls each second anyway
            wake_dispatchers(current_runtime().redis)


def _give_up_when_expired(deliveries: list[dict[str, Any]], error: Exception) -> dict[str, int]:
    """A job that failed as a whole: raise for RQ to retry it, unless its deliveries are past the retry window."""
    runtime = current_runtime()
    window = runtime.config.settings.delivery.retry_for_seconds
    now = time.time()
    if not all(now - float(delivery.get("queued_at") or now) > window for delivery in deliveries):
        raise error
    job_key = _job_key(deliveries)
    pending = runtime.ledger.undelivered(job_key, deliveries)
    attempts = [Attempt(delivery, Outcome.DEAD, answer=describe_error(error)) for delivery in pending]
    runtime.dead_letters.add(attempts, _current_attempt(), reason_prefix=f"gave up after {window:g} s: ")
    runtime.ledger.forget(job_key)
    events = events_in(attempts)
    if attempts:
        site, destination = deliveries[0]["site"], deliveries[0]["destination"]
        record_job(runtime.redis, JobFigures(site, destination, Counter(dead_lettered=events), events_failed=events))
    log.warning("%d events dead-lettered after %g s of failing jobs: %s", events, window, type(error).__name__)
    return {"dead": events, "already_delivered": _events_of(deliveries) - _events_of(pending)}


def _events_of(deliveries: Iterable[dict[str, Any]]) -> int:
    return sum(len(delivery["event_ids"]) for delivery in deliveries)


def events_in(attempts: Iterable[Attempt]) -> int:
    """Events the attempts carry: what every count of the pipeline counts (a Depict request holds many)."""
    return sum(len(attempt.delivery["event_ids"]) for attempt in attempts)


def _record_figures(
    redis: Redis, site: str, destination: str, attempts: list[Attempt], given_up: list[Attempt], to_retry: list[Attempt]
) -> None:
    """The job's outcomes in events, vendor answers and answer times, for /metrics and the console."""
    sent = [attempt for attempt in attempts if attempt.outcome is not Outcome.UNSENT]
    answered = [attempt for attempt in sent if attempt.seconds is not None]
    failed = [attempt for attempt in sent if attempt.outcome is not Outcome.DELIVERED]
    delivered = events_in(attempt for attempt in sent if attempt.outcome is Outcome.DELIVERED)
    figures = JobFigures(
        site,
        destination,
        outcomes=Counter(
            delivered=delivered,
            retried=events_in(to_retry),
            dead_lettered=events_in(attempt for attempt in sent if attempt.outcome is Outcome.DEAD) + events_in(given_up),
            returned=events_in(attempt for attempt in attempts if attempt.outcome is Outcome.UNSENT),
        ),
        answers=Counter(answer_class(attempt.status) for attempt in answered),
        latencies=[attempt.seconds for attempt in answered if attempt.seconds is not None],
        events_delivered=delivered,
        events_failed=events_in(failed),
    )
    record_job(redis, figures)


def _log_job(site: str, destination: str, summary: dict[str, int], started: float, note: str = "") -> None:
    """The job's one log line, in events: ``demo/depict: 3 delivered, 0 failed in 57 ms``, then what else happened."""
    failed = summary.get("dead", 0) + summary.get("retry", 0)
    extras = [
        f"{summary[key]} {label}"
        for key, label in (
            ("already_delivered", "already delivered"),
            ("dead", "dead-lettered"),
            ("returned_to_outbox", "returned to the outbox"),
        )
        if summary.get(key)
    ]
    extras += [note] if note else []
    elapsed_ms = (time.monotonic() - started) * 1000
    level = logging.WARNING if failed else logging.INFO
    more = f" ({'; '.join(extras)})" if extras else ""
    delivered = summary.get("delivered", 0)
    log.log(level, "%s/%s: %d delivered, %d failed in %.0f ms%s", site, destination, delivered, failed, elapsed_ms, more)


def _forward(deliveries: list[dict[str, Any]]) -> dict[str, int]:
    started = time.monotonic()
    runtime = current_runtime()
    policy = runtime.config.settings.delivery
    site, destination = deliveries[0]["site"], deliveries[0]["destination"]
    breaker = Breaker(runtime.redis, site, destination)
    job_key = _job_key(deliveries)
    if breaker.is_open():
        returned = runtime.ledger.undelivered(job_key, deliveries)
        return_to_outbox(runtime.redis, returned)
        runtime.ledger.forget(job_key)
        record_job(runtime.redis, JobFigures(site, destination, outcomes=Counter(returned=_events_of(returned))))
        _log_job(site, destination, {"returned_to_outbox": _events_of(returned)}, started, "breaker open after failures")
        return {"returned_to_outbox": _events_of(returned)}

    pending = runtime.ledger.undelivered(job_key, deliveries)
    attempts = runtime.send_all(job_key, pending, deadline=started + send_window_seconds(policy))
    unsent = [a.delivery for a in attempts if a.outcome is Outcome.UNSENT]
    return_to_outbox(runtime.redis, unsent)
    now = time.time()
    delivered = [a for a in attempts if a.outcome is Outcome.DELIVERED]
    dead = [a for a in attempts if a.outcome is Outcome.DEAD]
    to_retry = [a for a in attempts if a.outcome is Outcome.RETRY and not _expired(a, policy.retry_for_seconds, now)]
    given_up = [a for a in attempts if a.outcome is Outcome.RETRY and _expired(a, policy.retry_for_seconds, now)]
    attempt_number = _current_attempt()
    runtime.dead_letters.add(dead, attempt_number)
    runtime.dead_letters.add(given_up, attempt_number, reason_prefix=f"gave up after {policy.retry_for_seconds:g} s: ")
    summary = {
        "delivered": events_in(delivered),
        "already_delivered": _events_of(deliveries) - _events_of(pending),
        "dead": events_in(dead) + events_in(given_up),
        "retry": events_in(to_retry),
        "returned_to_outbox": _events_of(unsent),
    }
    _record_figures(runtime.redis, site, destination, attempts, given_up, to_retry)
    if to_retry:
        retry_after = max((a.retry_after or 0.0) for a in to_retry)
        delay = retry_delay(attempt_number, policy, retry_after)
        if not delivered:
            breaker.open_for(delay)
        _schedule_next_try(delay)
        reasons = ", ".join(sorted({a.reason for a in to_retry}))
        _log_job(site, destination, summary, started, f"{len(to_retry)} retry in {delay:.1f} s: {reasons}")
        raise DeliveriesFailed(f"{len(to_retry)} {destination} deliveries of {site} retry in {delay:.1f} s: {reasons}")
    runtime.ledger.forget(job_key)
    _log_job(site, destination, summary, started)
    return summary
