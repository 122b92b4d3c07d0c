"""The in-process rate-limit storage: fixed windows per key that renew when they end, and no thread."""

from __future__ import annotations

import threading
import time

from limits import parse
from limits.strategies import FixedWindowRateLimiter

from collector.storage.rate_limit_storage import ProcessMemoryStorage


def test_a_window_counts_per_key_and_renews_when_it_ends(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    limiter = FixedWindowRateLimiter(ProcessMemoryStorage())
    limit = parse("2 per minute")
    assert [limiter.hit(limit, "a") for _ in range(3)] == [True, True, False]
    assert limiter.hit(limit, "b"), "another client has its own count"
    now[0] += 61
    assert limiter.hit(limit, "a"), "a new window starts after the old one ends"


def test_ended_windows_are_swept_and_no_thread_is_started(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    threads = threading.active_count()
    storage = ProcessMemoryStorage()
    for number in range(100):
        storage.incr(f"client-{number}", 1)
    now[0] += 120
    storage.incr("late", 1)
    assert storage.get("client-1") == 0 and len(storage._windows) == 1
    assert threading.active_count() == threads
