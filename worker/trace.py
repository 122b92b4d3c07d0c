"""The worker's side of traced deliveries: one record per attempt, masked, for the console's event page.

A delivery is traced when ``/collect`` marked it so (the console is on and
its budget allowed, ``collector/storage/delivery_trace.py``). For each attempt at
one, the job keeps what a site owner needs to see why an event did or did
not reach a vendor: when, the outcome, the vendor's status and answer
(at most :data:`~collector.storage.delivery_trace.MAX_ANSWER_CHARS`) and how long it
took, and the request as it was sent: the URL, the headers with the API
key masked (the site's keys wherever they appear, and the key headers
whole), the visitor's forwarded address cut to its first part, and the body
with a Commerce Account's personal fields, e-mail addresses and
secret-looking URL parameters masked, cut to
:data:`~collector.storage.delivery_trace.MAX_REQUEST_BODY_CHARS`.

:func:`attempt_records` returns the records as JSON text; the job writes
them in the pipeline of its counts (``delivery_stats.record_job``). With the
console off it returns at once: the delivery path does nothing more.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from collector.storage.delivery_trace import MAX_ANSWER_CHARS, MAX_REQUEST_BODY_CHARS, TRACE_FIELD
from collector.observe.live_tail import masked as without_personal_fields
from collector.observe.masking import MASK, masked_strings, masked_text
from worker.dead_letters import masked as without_secrets
from worker.delivery import Attempt, Outcome, VendorClient
from worker.runtime import WorkerRuntime, api_keys

KEY_HEADERS = frozenset({"authorization", "x-api-key"})
ADDRESS_HEADERS = frozenset({"x-forwarded-for"})


def masked_headers(headers: dict[str, str], secrets: Sequence[str]) -> dict[str, str]:
    """The request's headers as the console may show them: no API key, no whole visitor address."""
    shown = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in KEY_HEADERS:
            kept = without_secrets(value, secrets)
            shown[name] = kept if kept != value else MASK
        elif lowered in ADDRESS_HEADERS:
            shown[name] = ", ".join(part.strip().split(".")[0].split(":")[0] + "." + MASK for part in value.split(",") if part.strip())
        else:
            shown[name] = masked_text(without_secrets(value, secrets))
    return shown


def masked_body(body: Any, secrets: Sequence[str]) -> str:
    """The body as JSON text with personal fields, e-mails, secret URL parameters and API keys masked, cut to size."""
    text = json.dumps(masked_strings(without_personal_fields(body)), ensure_ascii=False, separators=(",", ":"))
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text if len(text) <= MAX_REQUEST_BODY_CHARS else text[: MAX_REQUEST_BODY_CHARS - 1] + "…"


def _request(client: VendorClient | None, delivery: dict[str, Any], secrets: Sequence[str]) -> dict[str, Any]:
    if client is None:
        return {"url": None, "headers": {}, "body": masked_body(delivery["body"], secrets)}
    headers = {**client.headers_for(delivery), "Content-Type": "application/json"}
    return {"url": client.url, "headers": masked_headers(headers, secrets), "body": masked_body(delivery["body"], secrets)}


def _record(attempt: Attempt, client: VendorClient | None, secrets: Sequence[str], job_try: int, gave_up: bool, at: float) -> str:
    delivery = attempt.delivery
    outcome = Outcome.DEAD if gave_up else attempt.outcome
    return json.dumps(
        {
            "delivery": delivery["id"],
            "destination": delivery["destination"],
            "event_ids": list(delivery["event_ids"]),
            "at": attempt.sent_at or at,
            "try": job_try,
            "outcome": outcome.value,
            "status": attempt.status,
            "ms": round(attempt.seconds * 1000, 1) if attempt.seconds is not None else None,
            "reason": without_secrets(attempt.reason, secrets),
            "answer": masked_text(without_secrets(attempt.answer, secrets))[:MAX_ANSWER_CHARS],
            "request": _request(client, delivery, secrets),
        },
        ensure_ascii=False,
    )


def attempt_records(runtime: WorkerRuntime, attempts: Sequence[Attempt], job_try: int, given_up: Sequence[Attempt]) -> list[str]:
    """The records of the job's attempts at traced deliveries, each after the tries it waited out within the job
    (none when the console is off); ``given_up``: dead-lettered as too old."""
    if runtime.config.console is None:
        return []
    traced = [attempt for attempt in attempts if attempt.delivery.get(TRACE_FIELD) and attempt.outcome is not Outcome.UNSENT]
    if not traced:
        return []
    secrets, clients, at = api_keys(runtime.config), runtime.sender.clients, time.time()
    gave_up = {id(attempt) for attempt in given_up}
    return [
        _record(each, clients.get((each.delivery["site"], each.delivery["destination"])), secrets, job_try, each is attempt and id(attempt) in gave_up, at)
        for attempt in traced
        for each in (*attempt.earlier, attempt)
    ]
