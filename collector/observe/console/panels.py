"""What each panel of the console shows, read from Redis and shaped for the templates and the JSON API.

Nothing here writes: the panels read what the collector and the workers
already keep (``collector/storage/delivery_stats.py``, ``collector/storage/drop_stats.py``,
``worker/backlog.py``, ``collector/storage/outbox.py``, ``collector/observe/live_tail.py``,
the dead letters). The
chart is drawn on the server as inline SVG: one small chart per site and
destination, a stacked bar per clock minute (delivered below, failed on
top), scaled to that chart's busiest minute.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from redis import Redis

from collector.config.defaults import DESTINATIONS
from collector.config.schema import CollectorConfig
from collector.observe.live_tail import recent_batches, recent_refusals
from collector.observe.masking import masked_strings, masked_text
from collector.storage import delivery_stats, drop_stats
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
class Bar:
    """One minute of a chart: its counts and the two stacked rectangles (height 0: not drawn)."""

    minute: int
    x: int
    delivered: int
    failed: int
    delivered_y: float
    delivered_height: float
    failed_y: float
    failed_height: float

    @property
    def at(self) -> float:
        return self.minute * 60.0


@dataclass(frozen=True)
class Chart:
    site: str
    destination: str
    bars: list[Bar]  # only the minutes with events
    delivered: int
    failed: int
    peak: int
    width: int
    height: int
    starts_at: float
    hour_marks: list[int]  # x of each full hour


def _heights(delivered: int, failed: int, peak: int) -> tuple[float, float]:
    def height(count: int) -> float:
        return 0.0 if not count else max(MIN_BAR, count / peak * CHART_HEIGHT)

    low = height(delivered)
    return low, min(height(failed), max(0.0, CHART_HEIGHT - low))


def chart_pairs(config: CollectorConfig, counted: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every configured site and destination, and any other the counts name (a site since removed)."""
    configured = [(site.name, name) for site in config.sites.values() for name in DESTINATIONS if getattr(site, name) is not None]
    return sorted(set(configured) | set(counted))


def charts(redis: Redis, config: CollectorConfig, hours: float, now: float) -> list[Chart]:
    """One chart per site and destination over the last ``hours``."""
    minutes = delivery_stats.events_per_minute(redis, delivery_stats.minutes_for(hours), now)
    counted = delivery_stats.sites_and_destinations(key for _, counts in minutes for key in counts)
    result = []
    for site, destination in chart_pairs(config, counted):
        series = [
            (minute, counts.get((site, destination, "delivered"), 0), counts.get((site, destination, "failed"), 0))
            for minute, counts in minutes
        ]
        peak = max((delivered + failed for _, delivered, failed in series), default=0)
        bars = []
        for index, (minute, delivered, failed) in enumerate(series):
            if not delivered and not failed:
                continue
            low, high = _heights(delivered, failed, peak)
            bars.append(Bar(minute, index * BAR_STEP, delivered, failed, CHART_HEIGHT - low, low, CHART_HEIGHT - low - high, high))
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
                starts_at=minutes[0][0] * 60.0,
                hour_marks=[index * BAR_STEP for index, (minute, _, _) in enumerate(series) if minute % 60 == 0 and index],
            )
        )
    return result


def event_totals(redis: Redis, minutes: int, now: float) -> list[dict[str, Any]]:
    """Events delivered and failed per site and destination over the last ``minutes``, for the JSON API."""
    totals: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for _, counts in delivery_stats.events_per_minute(redis, minutes, now):
        for (site, destination, kind), count in counts.items():
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
) -> tuple[list[dict[str, Any]], int]:
    """The matching dead letters, newest first, at most ``limit``, and how many match in all."""
    from worker.replay import dead_letters_matching

    letters = dead_letters_matching(redis, site, destination, status, delivery_id)
    letters.sort(key=lambda letter: letter.failed_at, reverse=True)
    rows = [
        {
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
        for letter in letters[:limit]
    ]
    return rows, len(letters)


def live_tail(redis: Redis, config: CollectorConfig) -> list[dict[str, Any]]:
    """Per configured site, the events of its last accepted batches, newest batch first.

    An Account's personal fields were masked when the tail was written;
    e-mail addresses and secret-looking URL parameters are masked here
    (``masking.py``). Each event row carries its batch's time and number; at
    most :data:`EVENTS_SHOWN` events per site.
    """
    tail = []
    for name in sorted(config.sites):
        batches = recent_batches(redis, name)
        rows = [
            {"at": batch.get("at"), "batch": number, **masked_strings(event)}
            for number, batch in enumerate(batches)
            for event in batch.get("events", ())
        ]
        tail.append({"site": name, "batches": len(batches), "events": rows[:EVENTS_SHOWN], "more": max(0, len(rows) - EVENTS_SHOWN)})
    return tail


DROP_REASONS = {"bot": "a known bot or headless browser", "privacy": "the visitor's privacy choice (consent, GPC)"}


def dropped_rows(redis: Redis, minutes: int, now: float | None) -> list[dict[str, Any]]:
    """Events answered but not queued over the last ``minutes``, per site and reason (``bot``, ``privacy``)."""
    counts = drop_stats.dropped_counts(redis, minutes, now)
    return [{"site": site, "reason": reason, "events": events} for (site, reason), events in sorted(counts.items())]


def refusals(redis: Redis) -> list[dict[str, Any]]:
    """The last refusals, their reasons with e-mail addresses and secret-looking URL parameters masked."""
    return [masked_strings(refusal) for refusal in recent_refusals(redis)]
