"""The per-address rate limit under `collector serve` with several processes, counted in memory or in Redis.

In memory (the default) each of the N gunicorn processes allows limit / N:
together they never allow more than the limit, and a client is refused
somewhere between limit / N and the limit, depending on how its requests
spread. In Redis the count is exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ORIGIN, SITE
from tests.factories import make_event
from tests.stack import ServeStack, config_toml

LIMIT = 30
PROCESSES = 3
SENT = 2 * LIMIT


def limited_config(storage: str) -> Callable[[str, str], str]:
    def make(depict_url: str, commerce_url: str) -> str:
        text = config_toml(depict_url, commerce_url)
        return text.replace('rate_limit = "100000 per minute"', f'rate_limit = "{LIMIT} per minute"\nrate_limit_storage = "{storage}"')

    return make


@pytest.fixture(params=["memory", "redis"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, ServeStack]]:
    with ServeStack(tmp_path, serve_workers=PROCESSES, make_config=limited_config(request.param)) as running:
        yield request.param, running


def test_the_processes_together_never_allow_more_than_the_limit(stack: tuple[str, ServeStack]) -> None:
    storage, running = stack
    statuses: Counter = Counter()
    refusal = None
    for _ in range(SENT):
        # a new connection each time, as browsers behind different keep-alives would land on any process
        answer = httpx.post(f"{running.url}/collect", json={"site": SITE, "events": [make_event()]}, headers={"Origin": ORIGIN}, timeout=10)
        statuses[answer.status_code] += 1
        if answer.status_code == 429:
            refusal = answer
    accepted = statuses[202]
    assert statuses[202] + statuses[429] == SENT, statuses
    if storage == "redis":
        assert accepted == LIMIT
    else:
        assert LIMIT // PROCESSES <= accepted <= LIMIT, statuses
    assert refusal is not None and refusal.headers["Retry-After"]
    assert f"more than {LIMIT} per minute" in refusal.json()["error"]["message"]
