"""The RQ job: send one job's deliveries concurrently; raise so RQ retries what failed.

A job holds up to ``deliveries_per_job`` deliveries of one site and
destination. Deliveries already recorded as delivered are skipped, so a
retried job resends only what failed. Answers that repeating cannot fix
(400, 401, 403, 404, 422) go to the dead letters at once; answers worth
another try (timeouts, 408, 429, 5xx) make the job raise until its retries
run out, and then go to the dead letters too.
"""

from __future__ import annotations

import logging
from typing import Any

from rq import get_current_job

from worker.delivery import Outcome
from worker.runtime import current_runtime

log = logging.getLogger(__name__)


class DeliveriesFailed(Exception):
    """Some deliveries of the job should be tried again later."""


def _is_last_attempt() -> bool:
    job = get_current_job()
    return job is None or not job.retries_left


def _attempt_number() -> int:
    job = get_current_job()
    if job is None or job.retry_intervals is None:
        return 1
    return len(job.retry_intervals) - (job.retries_left or 0) + 1


def forward_deliveries(deliveries: list[dict[str, Any]]) -> dict[str, int]:
    runtime = current_runtime()
    pending = runtime.ledger.undelivered(deliveries)
    attempts = runtime.send_all(pending)
    runtime.ledger.mark_delivered([a.delivery for a in attempts if a.outcome is Outcome.DELIVERED])

    dead = [a for a in attempts if a.outcome is Outcome.DEAD]
    to_retry = [a for a in attempts if a.outcome is Outcome.RETRY]
    tries = _attempt_number()
    runtime.dead_letters.add(dead, tries)
    summary = {
        "delivered": len(attempts) - len(dead) - len(to_retry),
        "already_delivered": len(deliveries) - len(pending),
        "dead": len(dead),
        "retry": len(to_retry),
    }
    if to_retry and _is_last_attempt():
        runtime.dead_letters.add(to_retry, tries, reason_prefix="gave up after retries: ")
        summary["dead"] += len(to_retry)
        summary["retry"] = 0
    elif to_retry:
        reasons = sorted({attempt.reason for attempt in to_retry})
        raise DeliveriesFailed(f"{len(to_retry)} of {len(deliveries)} deliveries will be retried: {', '.join(reasons)}")
    log.info("job done: %s", summary)
    return summary
