"""A batch of inbound events -> checked, budgeted and queued: the part every ingestion endpoint shares.

``/collect`` (our snippet) and ``/v1/...`` (Segment and RudderStack
clients, ``collector/sources/``) each turn what they receive into the
inbound events of ``inbound.py``; from there the path is one:

1. :func:`check_batch`: the site's Commerce Account allowlist, then the
   inbound schema; bad events are refused by index, the good ones kept. The
   allowlist comes first: an Account with a field the site does not accept
   is refused for that, and never asked for the other personal fields the
   schema requires of a whole consumer or lead;
2. the caller applies the visitor's privacy choice (it knows the protocol);
3. :func:`queue_batch`: the per-request Web Event budget where the sender is
   a browser, the site's and the visitor's per-minute budgets, dedupe and
   the outboxes, in one enqueue script (``queue.py``);
4. :func:`count_outcome`: the ``collector_events_total`` counters.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import RedisError

from collector import defaults, metrics
from collector.account_fields import refused_account_fields
from collector.config import Site
from collector.enrich import RequestContext
from collector.errors import BudgetExceeded, QueueUnavailable
from collector.event_check import check_events
from collector.extensions import collector_state
from collector.live_tail import tail_entry
from collector.request_body import lone_surrogate_errors
from collector.queue import Budget, Delivery, OverBudget, minute_budget
from collector.routing import build_deliveries, routes_to_commerce

log = logging.getLogger(__name__)

# A batch can meet ids claimed by a concurrent request between our tries;
# three tries settle any realistic race.
_ENQUEUE_TRIES = 3


@dataclass(frozen=True)
class VisitorEvents:
    """Events of one visitor, with what the request says about that visitor (IP, User-Agent, page)."""

    context: RequestContext
    events: list[dict[str, Any]]


def _refused_accounts(site: Site, raw_events: list[Any], screen_text: bool) -> dict[int, dict[str, Any]]:
    """By index, the refusals of the events whose Commerce Account holds fields the site does not accept from a browser.

    Read from the events as sent, before the schema. An event whose strings
    may hold a lone surrogate is left to the schema's own check, which names it.
    """
    if site.commerce is None:
        return {}
    refused = {}
    for index, event in enumerate(raw_events):
        props = event.get("props") if isinstance(event, dict) else None
        account = props.get("account") if isinstance(props, dict) else None
        if account is None or (screen_text and lone_surrogate_errors(event) is not None):
            continue
        errors = refused_account_fields(account, site.commerce.account_fields)
        if errors:
            event_id = event.get("id")
            refused[index] = {"index": index, "id": event_id if isinstance(event_id, str) else None, "errors": {"props": {"account": errors}}}
    return refused


def check_batch(site: Site, raw_events: list[Any], screen_text: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The batch's events to queue, and the refused ones with their reasons, by index.

    ``screen_text``: the body had a ``\\uD8xx`` escape, so strings may hold lone surrogates.
    """
    refused = _refused_accounts(site, raw_events, screen_text)
    if not refused:
        return check_events(raw_events, screen_text=screen_text)
    kept = [index for index in range(len(raw_events)) if index not in refused]
    events, rejected = check_events([raw_events[index] for index in kept], screen_text=screen_text)
    rejected = [{**item, "index": kept[item["index"]]} for item in rejected] + list(refused.values())
    return events, sorted(rejected, key=lambda item: item["index"])


def without_repeats(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The batch with each event id once (a client may retry inside its own batch)."""
    seen: set[str] = set()
    unique = []
    for event in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            unique.append(event)
    return unique


def check_web_event_budget(site: Site, events: Sequence[dict[str, Any]]) -> None:
    """Each Web Event is one Commerce API call with the site's key: a browser's request may carry only so many."""
    web_events = sum(1 for event in events if routes_to_commerce(site, event["type"]))
    limit = site.limits.web_events_per_request
    if web_events > limit:
        metrics.EVENTS.labels(site.name, "over_budget").inc(len(events))
        raise BudgetExceeded(
            f"this request holds {web_events} Web Events; site {site.name!r} takes at most {limit} per request",
            details={"web_events": web_events, "web_events_per_request": limit},
            headers={"Retry-After": str(defaults.RETRY_AFTER_OVER_REQUEST_BUDGET_SECONDS)},
        )


def _budgets(site: Site, visitor_id: str | None) -> list[Budget]:
    """The per-minute budgets a batch is charged to: the site's, and its visitor's when it has one."""
    limits = site.limits
    budgets = [minute_budget(f"{site.name}:site", limits.events_per_minute, "for the whole site")]
    if visitor_id is not None:
        budgets.append(minute_budget(f"{site.name}:visitor:{visitor_id}", limits.visitor_events_per_minute, "per visitor"))
    return budgets


def _deliveries(site: Site, visitors: Sequence[VisitorEvents], skip: set[str]) -> tuple[list[str], list[Delivery], list[dict[str, Any]]]:
    event_ids, deliveries, events = [], [], []
    for visitor in visitors:
        kept = [event for event in visitor.events if event["id"] not in skip]
        deliveries += build_deliveries(site, kept, visitor.context) if kept else []
        event_ids += [event["id"] for event in kept]
        events += kept
    return event_ids, deliveries, events


def queue_batch(site: Site, visitors: Sequence[VisitorEvents], visitor_budget: str | None) -> int:
    """Queue the events' deliveries; return how many events were new (the others were seen before).

    ``visitor_budget`` is the visitor id charged the per-visitor budget, or
    None for a batch that is not one visitor's (a shop's backend).
    """
    state = collector_state()
    budgets = _budgets(site, visitor_budget)
    already_seen: set[str] = set()
    for _ in range(_ENQUEUE_TRIES):
        event_ids, deliveries, events = _deliveries(site, visitors, already_seen)
        if not event_ids or not deliveries:
            return len(event_ids)
        try:
            tail = tail_entry(site.name, events) if state.keeps_live_tail else None
            seen_now = state.outbox.try_enqueue(site.name, event_ids, deliveries, budgets, tail)
        except OverBudget as over:
            metrics.EVENTS.labels(site.name, "over_budget").inc(len(event_ids))
            raise BudgetExceeded(
                f"over this site's budget of {over.budget.limit} events per minute {over.budget.scope}; "
                "retry after Retry-After seconds",
                headers={"Retry-After": str(over.retry_after_seconds)},
            ) from None
        except RedisError as error:
            log.warning("redis unavailable while queueing for site %s: %s", site.name, type(error).__name__)
            raise QueueUnavailable(headers={"Retry-After": str(defaults.RETRY_AFTER_WHEN_UNAVAILABLE_SECONDS)}) from None
        if not seen_now:
            return len(event_ids)
        already_seen.update(seen_now)
    raise QueueUnavailable(headers={"Retry-After": "1"})


def count_outcome(site: Site, accepted: int, duplicates: int, rejected: int, dropped_for_privacy: int) -> None:
    """Add the batch to ``collector_events_total``; an outcome with nothing to add is not touched (each touch writes to the metrics files under gunicorn)."""
    metrics.EVENTS.labels(site.name, "accepted").inc(accepted)
    for outcome, count in (
        ("duplicate", duplicates),
        ("rejected", rejected),
        ("dropped_for_privacy", dropped_for_privacy),
    ):
        if count:
            metrics.EVENTS.labels(site.name, outcome).inc(count)
