"""A batch of inbound events -> checked, budgeted and queued: the part every ingestion endpoint shares.

``/collect`` (our snippet) and ``/v1/...`` (Segment and RudderStack
clients, ``collector/inbound/sources/``) each turn what they receive into the
inbound events of ``schema.py``; from there the path is one:

1. :func:`check_batch`: the site's Commerce Account allowlist, then the
   inbound schema; bad events are refused by index, the good ones kept. The
   allowlist comes first: an Account with a field the site does not accept
   is refused for that, and never asked for the other personal fields the
   schema requires of a whole consumer or lead;
2. the caller drops what the visitor's privacy choice forbids, and what a
   bot sent where the site drops bots (:func:`bot_sent`; it knows the
   protocol, and so which User-Agent speaks for the visitor);
3. :func:`queue_batch`: the per-request Web Event budget where the sender is
   a browser, the site's, the client address's and the visitor's per-minute
   budgets, dedupe and the outboxes, in one enqueue script (``storage/outbox.py``);
4. :func:`count_outcome`: the ``collector_events_total`` counters, and
   the dropped events by reason for the console (``storage/drop_stats.py``).

A dropped event is answered as the batch's others are (``202``, or ``200``
for Segment's clients), so that a client does not retry it, but it is
never counted as accepted: an accepted event is one that will be
delivered. The answer names it (``dropped_for_privacy``,
``dropped_as_bot``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis import RedisError

from collector.config import defaults
from collector.config.schema import Site
from collector.errors import BudgetExceeded, QueueUnavailable
from collector.extensions import collector_state
from collector.inbound.account_fields import refused_account_fields
from collector.inbound.bots import is_bot
from collector.inbound.enrich import RequestContext
from collector.inbound.event_check import check_events
from collector.inbound.request_body import lone_surrogate_errors
from collector.mapping.routing import build_deliveries, routes_to_commerce
from collector.observe import metrics
from collector.observe.live_tail import tail_entry
from collector.storage.drop_stats import record_dropped
from collector.storage.outbox import Budget, Delivery, OverBudget, minute_budget

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


def bot_sent(site: Site, user_agent: str | None) -> bool:
    """Whether ``site`` drops what this User-Agent sends: it drops bots, and the list names this one."""
    return site.drops_bots and is_bot(user_agent)


def web_events_in(site: Site, events: Sequence[dict[str, Any]]) -> int:
    """How many of the events go to Commerce, each one API call with the site's key."""
    return sum(1 for event in events if routes_to_commerce(site, event["type"]))


def check_web_event_budget(site: Site, web_events: int, events: int) -> None:
    """A browser's request may carry only so many Web Events (``events``: all it carries, counted if refused).

    ``web_events`` counts what the sender sent: an order of many products is
    one message to Segment's clients, so it counts once here; its expansion
    into one purchase per product is charged to the per-minute budgets,
    event by event, like everything else.
    """
    limit = site.limits.web_events_per_request
    if web_events > limit:
        metrics.EVENTS.labels(site.name, "over_budget").inc(events)
        raise BudgetExceeded(
            f"this request holds {web_events} Web Events; site {site.name!r} takes at most {limit} per request",
            details={"web_events": web_events, "web_events_per_request": limit},
            headers={"Retry-After": str(defaults.RETRY_AFTER_OVER_REQUEST_BUDGET_SECONDS)},
        )


def address_events_per_minute(site: Site) -> int:
    """What one client address may spend of the site's per-minute budget."""
    return max(1, int(site.limits.events_per_minute * site.limits.address_share))


def _budgets(site: Site, browser: RequestContext | None) -> list[Budget]:
    """The per-minute budgets a batch is charged to: the site's, and for a browser's request its address's
    and its visitor's.

    Nothing a page can rotate for free names a budget: the address is the
    one the trusted proxy hops report (IPv6 by its /64), and it may spend
    only ``address_share`` of the site's budget, so no address can leave
    the site's visitors without one. The visitor is the server-set cookie
    where the request carries it (many visitors may share an address), else
    the address; never an id the page chose.
    """
    limits = site.limits
    budgets = [minute_budget(f"{site.name}:site", limits.events_per_minute, "for the whole site")]
    if browser is not None:
        address = browser.address or "unknown"
        visitor = browser.visitor_id if browser.visitor_cookie_was_set else address
        budgets.append(minute_budget(f"{site.name}:address:{address}", address_events_per_minute(site), "per client address"))
        budgets.append(minute_budget(f"{site.name}:visitor:{visitor}", limits.visitor_events_per_minute, "per visitor"))
    return budgets


def _deliveries(site: Site, visitors: Sequence[VisitorEvents], skip: set[str]) -> tuple[list[str], list[Delivery], list[dict[str, Any]]]:
    event_ids, deliveries, events = [], [], []
    for visitor in visitors:
        kept = [event for event in visitor.events if event["id"] not in skip]
        deliveries += build_deliveries(site, kept, visitor.context) if kept else []
        event_ids += [event["id"] for event in kept]
        events += kept
    return event_ids, deliveries, events


def queue_batch(site: Site, visitors: Sequence[VisitorEvents], browser: bool) -> int:
    """Queue the events' deliveries; return how many events were new (the others were seen before).

    ``browser``: the batch is one browser's request, charged to its address
    and visitor too (a shop's backend sends for many visitors: only the
    site's budget applies).
    """
    state = collector_state()
    budgets = _budgets(site, visitors[0].context if browser and visitors else None)
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


def count_outcome(
    site: Site, accepted: int, duplicates: int, rejected: int, dropped: Mapping[str, int] | None = None
) -> None:
    """Add the batch to ``collector_events_total``, and its dropped events (by reason) to the console's counts.

    An outcome with nothing to add is not touched (each touch writes to the metrics files under gunicorn).
    """
    metrics.EVENTS.labels(site.name, "accepted").inc(accepted)
    for outcome, count in (("duplicate", duplicates), ("rejected", rejected)):
        if count:
            metrics.EVENTS.labels(site.name, outcome).inc(count)
    if dropped and any(dropped.values()):
        for reason, count in dropped.items():
            if count:
                metrics.EVENTS.labels(site.name, defaults.DROP_OUTCOMES[reason]).inc(count)
        record_dropped(collector_state().redis, site.name, dropped)
