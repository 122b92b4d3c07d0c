"""What each panel of the console shows, read from Redis and shaped for the templates and the JSON API.

Nothing here writes: the panels read what the collector and the workers
already keep (``collector/storage/delivery_stats.py``, ``collector/storage/drop_stats.py``,
``worker/backlog.py``, ``collector/storage/outbox.py``, ``collector/observe/live_tail.py``,
``collector/storage/delivery_trace.py``, the dead letters), filtered as the
console's query asks (``find.py``). The chart is drawn on the server as
inline SVG: one small chart per site and destination, a stacked bar per
clock minute or hour (delivered below, failed on top), scaled to that
chart's busiest bucket.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis import Redis

from collector.config.defaults import DESTINATIONS
from collector.config.schema import CollectorConfig
from collector.observe.console.find import RANGE_LABELS, Find
from collector.observe.live_tail import recent_batches, recent_refusals
from collector.observe.masking import masked_strings, masked_text
from collector.storage import delivery_stats, drop_stats
from collector.storage.delivery_trace import DEAD, DELIVERED, event_statuses, records_by_event, site_records
from collector.storage.outbox import KEY_PREFIX, pending_entries

CHART_HEIGHT = 100  # SVG user units; the CSS sets the drawn height
BAR_STEP = 4  # one minute's slot, in SVG units
BAR_WIDTH = 3
MIN_BAR = 2.0  # a minute with one event stays visible next to a busy one
EVENTS_SHOWN = 40  # per site in the live tail
DEAD_LETTERS_SHOWN = 200
ANSWER_SHOWN_CHARS = 600
_OUTBOX_PREFIX = KEY_PREFIX + "outbox:"


@dataclass(frozen=True)
class Span:
    """What the chart covers: ``buckets`` clock buckets of ``bucket_seconds`` each (minutes, or hours past a few hours)."""

    bucket_seconds: int
    buckets: int
    label: str

    @property
    def minutes(self) -> int:
        return self.buckets * self.bucket_seconds // 60


def span_of(find: Find, default_hours: float) -> Span:
    """``range=1h``: 60 minutes; ``24h``, ``7d``: hours; none: the ``[console] hours`` minute by minute."""
    if find.range == "1h":
        return Span(60, 60, RANGE_LABELS["1h"])
    if find.seconds:
        return Span(3600, find.seconds // 3600, RANGE_LABELS[find.range or ""])
    return Span(60, delivery_stats.minutes_for(default_hours), f"{default_hours:g} h")


@dataclass(frozen=True)
class Bar:
    """One bucket of a chart: its counts and the two stacked rectangles (height 0: not drawn)."""

    at: float
    x: int
    delivered: int
    failed: int
    delivered_y: float
    delivered_height: float
    failed_y: float
    failed_height: float


@dataclass(frozen=True)
class Chart:
    site: str
    destination: str
    bars: list[Bar]  # only the buckets with events
    delivered: int
    failed: int
    peak: int
    width: int
    height: int
    starts_at: float
    bucket_seconds: int
    marks: list[int]  # x of each full hour (minute buckets) or midnight (hour buckets)


def _heights(delivered: int, failed: int, peak: int) -> tuple[float, float]:
    def height(count: int) -> float:
        return 0.0 if not count else max(MIN_BAR, count / peak * CHART_HEIGHT)

    low = height(delivered)
    return low, min(height(failed), max(0.0, CHART_HEIGHT - low))


def chart_pairs(config: CollectorConfig, counted: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every configured site and destination, and any other the counts name (a site since removed)."""
    configured = [(site.name, name) for site in config.sites.values() for name in DESTINATIONS if getattr(site, name) is not None]
    return sorted(set(configured) | set(counted))


def _series(redis: Redis, span: Span, now: float) -> list[tuple[int, dict[tuple[str, ...], int]]]:
    if span.bucket_seconds == 60:
        return delivery_stats.events_per_minute(redis, span.buckets, now)
    return delivery_stats.events_per_hour(redis, span.buckets, now)


def charts(redis: Redis, config: CollectorConfig, span: Span, now: float, find: Find | None = None) -> list[Chart]:
    """One chart per site and destination (those ``find`` names) over ``span``."""
    buckets = _series(redis, span, now)
    counted = delivery_stats.sites_and_destinations(key for _, counts in buckets for key in counts)
    mark_every = 60 if span.bucket_seconds == 60 else 24  # buckets between grid lines: hours, or days
    result = []
    for site, destination in chart_pairs(config, counted):
        if find and (find.site and site != find.site or find.destination and destination != find.destination):
            continue
        series = [
            (bucket, counts.get((site, destination, "delivered"), 0), counts.get((site, destination, "failed"), 0))
            for bucket, counts in buckets
        ]
        peak = max((delivered + failed for _, delivered, failed in series), default=0)
        bars = []
        for index, (bucket, delivered, failed) in enumerate(series):
            if not delivered and not failed:
                continue
            low, high = _heights(delivered, failed, peak)
            at = float(bucket * span.bucket_seconds)
            bars.append(Bar(at, index * BAR_STEP, delivered, failed, CHART_HEIGHT - low, low, CHART_HEIGHT - low - high, high))
        result.append(
            Chart(
                site=site,
                destination=destination,
                bars=bars,
                delivered=sum(delivered for _, delivered, _ in series),
                failed=sum(failed for _, _, failed in series),
                peak=peak,
                width=len(series) * BAR_STEP,
                height=CHART_HEIGHT,
                starts_at=float(buckets[0][0] * span.bucket_seconds),
                bucket_seconds=span.bucket_seconds,
                marks=[index * BAR_STEP for index, (bucket, _, _) in enumerate(series) if bucket % mark_every == 0 and index],
            )
        )
    return result


def event_totals(redis: Redis, minutes: int, now: float, find: Find | None = None) -> list[dict[str, Any]]:
    """Events delivered and failed per site and destination (those ``find`` names) over the last ``minutes``
    (past the minutes kept: whole clock hours), for the JSON API."""
    if minutes > delivery_stats.MINUTES_KEPT:
        buckets = delivery_stats.events_per_hour(redis, -(-minutes // 60), now)
    else:
        buckets = delivery_stats.events_per_minute(redis, minutes, now)
    totals: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for _, counts in buckets:
        for (site, destination, kind), count in counts.items():
            if find and (find.site and site != find.site or find.destination and destination != find.destination):
                continue
            totals[(site, destination)][kind] += count
    return [
        {"site": site, "destination": destination, "delivered": figures["delivered"], "failed": figures["failed"]}
        for (site, destination), figures in sorted(totals.items())
    ]


def backlog_rows(redis: Redis, now: float) -> list[dict[str, Any]]:
    """Per destination: outbox entries, jobs waiting, running and retrying, and the lag in seconds."""
    from worker.backlog import backlogs

    return [
        {
            "destination": backlog.destination,
            "outbox_entries": backlog.outbox_entries,
            "jobs_waiting": backlog.jobs_waiting,
            "jobs_running": backlog.jobs_running,
            "jobs_retrying": backlog.jobs_retrying,
            "lag_seconds": round(backlog.lag_seconds(now), 3),
        }
        for backlog in backlogs(redis)
    ]


def outbox_rows(redis: Redis) -> list[dict[str, Any]]:
    """Per site and destination: the outbox entries (one per accepted ``/collect`` request) not yet taken by a worker."""
    rows = []
    for key, entries in pending_entries(redis).items():
        site, _, destination = key.removeprefix(_OUTBOX_PREFIX).rpartition(":")
        rows.append({"site": site, "destination": destination, "entries": int(entries)})
    return rows


def dead_letter_counts(redis: Redis) -> list[dict[str, Any]]:
    from worker.dead_letters import DeadLetters

    counts = DeadLetters(redis).count_by_site_and_destination()
    return [{"site": site, "destination": destination, "count": count} for (site, destination), count in sorted(counts.items())]


def dead_letter_rows(
    redis: Redis,
    site: str | None = None,
    destination: str | None = None,
    status: int | None = None,
    delivery_id: str | None = None,
    limit: int = DEAD_LETTERS_SHOWN,
    find: Find | None = None,
    since: float | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """The matching dead letters (by the replay filter, then ``find`` and ``since``), newest first, at most ``limit``, and how many match in all."""
    from worker.replay import dead_letters_matching

    letters = dead_letters_matching(redis, site, destination, status, delivery_id)
    letters.sort(key=lambda letter: letter.failed_at, reverse=True)
    rows = []
    for letter in letters:
        row = _dead_letter_row(letter)
        if since is not None and letter.failed_at < since:
            continue
        if find is not None and not find.matches_letter(row, letter.delivery.get("body"), list(letter.delivery.get("event_ids") or ())):
            continue
        rows.append(row)
    return rows[:limit], len(rows)


def _dead_letter_row(letter: Any) -> dict[str, Any]:
    return {
        "site": letter.delivery["site"],
        "destination": letter.delivery["destination"],
        "id": letter.delivery["id"],
        "events": len(letter.delivery.get("event_ids") or ()),
        "status": letter.status,
        "reason": letter.reason,
        "answer": masked_text(letter.answer[:ANSWER_SHOWN_CHARS]),  # a vendor's answer may echo what it was sent
        "attempts": letter.attempts,
        "failed_at": letter.failed_at,
    }


def _dead_letters_of(redis: Redis, site: str, carried: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """The dead letters of these ``(destination, delivery id)`` pairs of ``site``, in one round trip."""
    from worker.dead_letters import DeadLetters

    return DeadLetters(redis).find(site, list(carried))


def live_tail(redis: Redis, config: CollectorConfig, find: Find | None = None, now: float | None = None) -> list[dict[str, Any]]:
    """Per configured site (the one ``find`` names), the events of its last accepted batches, newest batch first.

    Each event row has its batch's time, number and source, and its status
    per destination: ``dead`` while its delivery is a dead letter (traced
    or not), else from its traced attempts (``delivery_trace.py``), else
    ``queued`` or ``not traced``. An Account's personal fields were masked when the tail was
    written; e-mail addresses and secret-looking URL parameters are masked
    here (``masking.py``). At most :data:`EVENTS_SHOWN` events per site,
    after the filters.
    """
    find = find or Find()
    since = find.since(time.time() if now is None else now)
    tail = []
    for name in sorted(config.sites):
        if find.site and name != find.site:
            continue
        batches = recent_batches(redis, name)
        by_event = records_by_event(site_records(redis, name)) if batches else {}
        events = [(number, batch, event) for number, batch in enumerate(batches) for event in batch.get("events", ())]
        carried = {(destination, delivery) for _, _, event in events for destination, delivery in (event.get("to") or {}).items()}
        dead = _dead_letters_of(redis, name, carried) if carried else {}
        rows = []
        for number, batch, event in events:
            if since is not None and float(batch.get("at") or 0) < since:
                continue
            row = _tail_row(number, batch, event, by_event.get(event["id"], []), dead)
            if find.matches_event(name, row, row["source"], row["statuses"]):
                rows.append(row)
        tail.append({"site": name, "batches": len(batches), "events": rows[:EVENTS_SHOWN], "more": max(0, len(rows) - EVENTS_SHOWN)})
    return tail


def _tail_row(number: int, batch: dict[str, Any], event: dict[str, Any], records: list[dict[str, Any]], dead: dict[tuple[str, str], Any]) -> dict[str, Any]:
    carried = event.get("to") or {}
    traced = bool(batch.get("traced"))
    statuses = event_statuses(sorted(set(carried) | {record["destination"] for record in records}), traced, records)
    for destination, delivery in carried.items():
        if (destination, delivery) in dead and statuses.get(destination) != DELIVERED:
            statuses[destination] = DEAD  # a dead letter is there until replayed: it outranks an older record, or none
    answers = {}
    for record in records:
        answers.setdefault(record["destination"], record.get("status"))
    return {
        "at": batch.get("at"),
        "batch": number,
        "source": batch.get("source"),
        "traced": traced,
        **masked_strings({key: value for key, value in event.items() if key != "to"}),
        "statuses": statuses,
        "answers": answers,
    }


def event_detail(redis: Redis, config: CollectorConfig, event_id: str, site: str | None = None) -> dict[str, Any] | None:
    """One event whole: what came in (masked), and per destination its status, every traced attempt with the
    request sent (keys masked) and the vendor's answer, and its dead letter; None when no site's tail or trace knows it."""
    for name in [site] if site else sorted(config.sites):
        if name not in config.sites:
            continue
        batches = recent_batches(redis, name)
        found = next(((number, batch, event) for number, batch in enumerate(batches) for event in batch.get("events", ()) if event["id"] == event_id), None)
        records = records_by_event(site_records(redis, name)).get(event_id, [])
        if found is None and not records:
            continue
        number, batch, event = found if found is not None else (0, {}, {"id": event_id, "type": None})
        carried = dict(event.get("to") or {})
        pairs = set(carried.items()) | {(record["destination"], record["delivery"]) for record in records}
        dead = _dead_letters_of(redis, name, pairs)
        row = _tail_row(number, batch, event, records, dead)
        destinations = []
        for destination, status in row["statuses"].items():
            attempts = [record for record in reversed(records) if record["destination"] == destination]
            letters = [_dead_letter_row(letter) for (dest, _), letter in sorted(dead.items()) if dest == destination]
            destinations.append(
                {
                    "destination": destination,
                    "status": status,
                    "deliveries": sorted({delivery for dest, delivery in pairs if dest == destination}),
                    "attempts": [masked_strings(attempt) for attempt in attempts],
                    "dead_letters": letters,
                }
            )
        return {"site": name, "in_tail": found is not None, "event": row, "destinations": destinations}
    return None


DROP_REASONS = {"bot": "a known bot or headless browser", "privacy": "the visitor's privacy choice (consent, GPC)"}


def dropped_rows(redis: Redis, minutes: int, now: float | None) -> list[dict[str, Any]]:
    """Events answered but not queued over the last ``minutes``, per site and reason (``bot``, ``privacy``)."""
    counts = drop_stats.dropped_counts(redis, minutes, now)
    return [{"site": site, "reason": reason, "events": events} for (site, reason), events in sorted(counts.items())]


def refusals(redis: Redis, find: Find | None = None, since: float | None = None) -> list[dict[str, Any]]:
    """The last refusals (those ``find`` and ``since`` match), their reasons with e-mail addresses and secret-looking URL parameters masked."""
    rows = [masked_strings(refusal) for refusal in recent_refusals(redis)]
    return [row for row in rows if (since is None or float(row.get("at") or 0) >= since) and (find is None or find.matches_refusal(row))]
