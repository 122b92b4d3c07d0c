"""Debug mode: with ``data-debug`` or ``collector('debug', true)`` the snippet logs each batch and the collector's answers.

Against the real collector (``tests/browser/first_party.py``), so that the
refusals logged are the collector's own, with its reasons: a 202 naming the
events it refused, a 422 when it refused them all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.first_party import Shop, open_page, regular_page, running_shop
from tests.chromium import pump_until

WAIT_SECONDS = 10


class Console:
    """What the page wrote to its console, as the values it passed (read once they are needed)."""

    def __init__(self, page: Any):
        self.page = page
        self.messages: list[Any] = []
        page.on("console", lambda message: self.messages.append(message))

    def calls(self) -> list[tuple[str, list[Any]]]:
        """Each console call of the snippet (first argument "collector"): its type and its arguments after that."""
        found = []
        for message in self.messages:
            values = [arg.json_value() for arg in message.args]
            if values and values[0] == "collector":
                found.append((message.type, values[1:]))
        return found

    def batches(self) -> list[list[dict[str, Any]]]:
        return [args[0] for _, args in self.calls() if len(args) == 1 and isinstance(args[0], list)]

    def answers(self) -> list[tuple[int, Any]]:
        return [(args[0], json.loads(args[1])) for _, args in self.calls() if len(args) == 2 and isinstance(args[0], int)]

    def wait_answers(self, count: int) -> list[tuple[int, Any]]:
        return pump_until(self.page, lambda: len(answers := self.answers()) >= count and answers, f"{count} answers logged", WAIT_SECONDS)


@pytest.fixture
def shop(tmp_path: Path, live_stack: Any) -> Iterator[Shop]:
    with running_shop(tmp_path, live_stack) as shop:
        yield shop


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    with regular_page(chromium) as page:
        yield page


def test_data_debug_logs_each_batch_and_every_refusal_with_the_collectors_reason(page, shop):
    """With data-debug: the batch, the 202 naming a refused event and why, and a 422 with the collector's message."""
    console = Console(page)
    open_page(page, shop.page("debug", tag="data-debug"))
    ((status, body),) = console.wait_answers(1)
    assert status == 202 and body["accepted"] == 1
    assert [e["type"] for e in console.batches()[0]] == ["page_view"]

    page.evaluate("collector('track', 'add_to_cart', {product_id: 'P', colour: 'red'}); collector('track', 'click'); collector('flush')")
    status, body = console.wait_answers(2)[1]
    assert status == 202 and body["accepted"] == 1
    (refused,) = body["rejected"]
    assert "colour" in json.dumps(refused["errors"])  # the reason, per event
    assert [e["type"] for e in console.batches()[1]] == ["add_to_cart", "click"]

    page.evaluate("collector('track', 'add_to_cart', {price: 1}); collector('flush')")
    status, body = console.wait_answers(3)[2]
    assert status == 422
    assert body["error"]["message"] == "no event was valid" and "price" in json.dumps(body["error"]["details"])
    assert page.evaluate("collector.errors") == 0 and not page.errors


def test_debug_command_turns_logging_on_and_off_and_the_snippet_is_silent_otherwise(page, shop):
    """collector('debug', true) logs from then on, collector('debug', false) stops it; without either, nothing is logged."""
    console = Console(page)
    open_page(page, shop.page("quiet"))
    pump_until(page, lambda: page.evaluate("localStorage._col_q === '[]'"), "the page view to be answered", WAIT_SECONDS)
    page.evaluate("collector('track', 'add_to_cart', {product_id: 'P'}); collector('flush')")
    pump_until(page, lambda: page.evaluate("localStorage._col_q === '[]'"), "the event to be answered", WAIT_SECONDS)
    assert console.messages == []

    page.evaluate("collector('debug', true); collector('track', 'add_to_cart', {product_id: 'Q'}); collector('flush')")
    ((status, body),) = console.wait_answers(1)
    assert status == 202 and body == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert [e["props"] for e in console.batches()[0]] == [{"product_id": "Q"}]

    page.evaluate("collector('debug', false); collector('track', 'add_to_cart', {product_id: 'R'}); collector('flush')")
    pump_until(page, lambda: page.evaluate("localStorage._col_q === '[]'"), "the last event to be answered", WAIT_SECONDS)
    page.wait_for_timeout(300)
    assert len(console.calls()) == 2
    assert page.evaluate("collector.errors") == 0 and not page.errors


def test_debug_logs_a_beacon_at_page_leave(page, shop):
    """A batch that leaves by sendBeacon at page hide is logged too (a beacon has no answer to log)."""
    console = Console(page)
    open_page(page, shop.page("leave", tag="data-debug"))
    console.wait_answers(1)
    page.evaluate("collector('track', 'add_to_cart', {product_id: 'P'})")
    page.evaluate("Object.defineProperty(document, 'hidden', {get: () => true}); document.dispatchEvent(new Event('visibilitychange'))")
    assert [e["type"] for e in console.batches()[-1]] == ["add_to_cart"]
    pump_until(page, lambda: any(e["type"] == "add_to_cart" for body in shop.posted for e in body["events"]), "the beacon", WAIT_SECONDS)
