"""Debian's headless Chromium as the browser tests and the browser benches drive it (Playwright).

The flags keep Chromium off the network it would otherwise call at start
(this machine's network is closed, and refusals arrive many at a time), and
``--no-sandbox`` lets it run as root in CI.

Headless Chromium says ``HeadlessChrome`` in its User-Agent, which the
collector's bot list names: by default a site drops what it sends
(``collector/inbound/bots.py``). The browser the tests and benches drive plays a
visitor, so it says what a desktop Chrome on Linux says
(:data:`VISITOR_USER_AGENT`, for every context, ``navigator.userAgent``
included); a test that wants the headless one passes ``user_agent=`` to
its context.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
VISITOR_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
CHROMIUM_ARGS = [
    f"--user-agent={VISITOR_USER_AGENT}",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The pre-load stub of the two tags a site adds (README): it queues calls until t.js has loaded.
STUB = "window.collector=window.collector||function(){(collector.q=collector.q||[]).push(arguments)}"


def chromium_available() -> bool:
    return Path(CHROMIUM).exists()


@contextmanager
def chromium_from(playwright: Any, *extra_args: str) -> Iterator[Any]:
    """A headless Chromium launched by an already running Playwright driver; closed on the way out.

    One test session runs one Playwright driver (the ``playwright_driver``
    fixture): a second sync driver in the same process fails ("Sync API
    inside the asyncio loop").
    """
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args])
    try:
        yield browser
    finally:
        browser.close()


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """A headless Chromium with a Playwright driver of its own (outside pytest: the benches, scripts)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright, chromium_from(playwright) as browser:
        yield browser


def pump_until(
    page: Any, predicate: Callable[[], Any], what: str, timeout: float, poll_ms: int = 50, explain: Callable[[], str] | None = None
) -> Any:
    """Poll ``predicate`` while Playwright runs (its route and event handlers only progress inside its calls); its value.

    Raises AssertionError naming ``what`` after ``timeout`` seconds, with ``explain()`` appended when given.
    """
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        page.wait_for_timeout(poll_ms)
    return value
