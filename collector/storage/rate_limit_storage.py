"""Where flask-limiter counts a client's requests by default: this process's memory, one fixed window per key.

limits' own ``MemoryStorage`` starts a timer thread to expire its keys
whenever the previous one has ended, that is about once per request under
load: a fifth of a ``/collect`` request's CPU. This storage does the same
counting with no thread: a key's window is renewed when it is found
expired, and expired keys are swept at most once a minute. It serves the
fixed-window strategy the collector uses (``collector/extensions.py``), under the URI
``collector-memory://``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from limits.storage import Storage

SCHEME = "collector-memory"
_SWEEP_SECONDS = 60.0


class ProcessMemoryStorage(Storage):
    """Fixed-window counters in a dict: ``key -> [window end, count]``."""

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._windows: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._next_sweep = time.time() + _SWEEP_SECONDS

    @property
    def base_exceptions(self) -> type[Exception]:
        return RuntimeError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            window = self._windows.get(key)
            if window is None or window[0] <= now:
                window = self._windows[key] = [now + expiry, 0]
            window[1] += amount
            return int(window[1])

    def get(self, key: str) -> int:
        window = self._windows.get(key)
        return int(window[1]) if window is not None and window[0] > time.time() else 0

    def get_expiry(self, key: str) -> float:
        window = self._windows.get(key)
        return window[0] if window is not None and window[0] > time.time() else time.time()

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        with self._lock:
            count = len(self._windows)
            self._windows.clear()
        return count

    def clear(self, key: str) -> None:
        with self._lock:
            self._windows.pop(key, None)

    def _sweep(self, now: float) -> None:
        self._windows = {key: window for key, window in self._windows.items() if window[0] > now}
        self._next_sweep = now + _SWEEP_SECONDS
