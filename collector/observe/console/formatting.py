"""How the console writes times, durations and JSON (Jinja filters, registered by the blueprint)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

MAX_JSON_CHARS = 400


def utc(timestamp: float | None) -> str:
    """``2026-11-23 17:03:05 UTC``."""
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(timestamp: float | None) -> str:
    """For ``<time datetime=...>``."""
    return datetime.fromtimestamp(timestamp or 0, timezone.utc).isoformat(timespec="seconds")


def clock(timestamp: float) -> str:
    """``17:03 UTC``."""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%H:%M UTC")


def duration(seconds: float) -> str:
    """``0 s``, ``4.2 s``, ``3 min 5 s``, ``2 h 3 min``, ``3 d 4 h``."""
    if seconds < 10:
        return f"{seconds:.1f} s" if seconds else "0 s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def ago(timestamp: float | None, now: float) -> str:
    """``just now``, ``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``."""
    if not timestamp:
        return "-"
    seconds = max(0, int(now - timestamp))
    if seconds < 2:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def compact_json(value: Any) -> str:
    """One line of JSON, cut to :data:`MAX_JSON_CHARS`."""
    text = json.dumps(value, separators=(", ", ": "), ensure_ascii=False, default=str)
    return text if len(text) <= MAX_JSON_CHARS else text[: MAX_JSON_CHARS - 1] + "…"


FILTERS = {"utc": utc, "iso": iso, "clock": clock, "duration": duration, "ago": ago, "compact_json": compact_json}
