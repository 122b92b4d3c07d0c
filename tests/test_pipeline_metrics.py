"""One scrape of the collector shows the whole pipeline, counted right across several processes."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories import make_event
from tests.stack import ORIGIN, SITE, ServeStack

BATCHES = 20
EVENTS_PER_BATCH = 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeStack]:
    """Two collector processes (gunicorn workers) and two `collector worker` supervisors on one Redis."""
    with ServeStack(tmp_path_factory.mktemp("metrics"), serve_workers=2, worker_processes=2) as deployment:
        yield deployment


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition, 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(key) == value for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def scrape(stack: ServeStack) -> str:
    return httpx.get(f"{stack.url}/metrics", timeout=10).text


def wait_for(predicate, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.2)
    assert predicate()


def test_counts_equal_what_was_sent_and_delivered(stack: ServeStack):
    """Events accepted, events delivered (a Depict request counts its events), vendor answers and latencies on /metrics
    match the stand-ins' records."""
    with httpx.Client(timeout=10) as client:
        for _ in range(BATCHES):
            events = [make_event("add_to_cart", props={"product_id": "P-1"}) for _ in range(EVENTS_PER_BATCH)]
            answer = client.post(f"{stack.url}/collect", json={"site": SITE, "events": events}, headers={"Origin": ORIGIN})
            assert answer.status_code == 202
    total = BATCHES * EVENTS_PER_BATCH
    wait_for(lambda: len(stack.commerce.event_ids()) >= total and len(stack.depict.event_ids()) >= total)
    wait_for(lambda: sample(scrape(stack), "collector_delivery_events_total", site=SITE, destination="commerce", outcome="delivered") >= total)
    text = scrape(stack)
    assert sample(text, "collector_events_total", site=SITE, outcome="accepted") == total
    assert sample(text, "collector_collect_requests_total", status="202") == BATCHES
    assert sample(text, "collector_delivery_events_total", site=SITE, destination="commerce", outcome="delivered") == total
    assert sample(text, "collector_delivery_events_total", site=SITE, destination="depict", outcome="delivered") == total, "events, not Depict's requests"
    assert sample(text, "collector_vendor_answers_total", site=SITE, destination="commerce", **{"class": "2xx"}) == total
    by_class = {c: sample(text, "collector_vendor_answers_total", site=SITE, destination="commerce", **{"class": c}) for c in ("2xx", "4xx", "5xx", "error")}
    answers = sum(by_class.values())
    # an "error" (a connection refused or timed out) may never have reached the stand-in
    assert answers - by_class["error"] <= len(stack.commerce.requests) and answers >= total
    assert sample(text, "collector_vendor_answer_seconds_count", destination="commerce") == answers
    assert sample(text, "collector_vendor_answer_seconds_bucket", destination="commerce", le="+Inf") == answers
    assert sample(text, "collector_lag_seconds", destination="commerce") == 0
    assert sample(text, "collector_redis_up") == 1


def test_failures_show_as_retried_and_dead_letters_waiting(stack: ServeStack):
    """A 500 is counted as retried with a 5xx answer; a 400 as dead-lettered, and the dead letter as waiting."""
    before = scrape(stack)
    stack.commerce.fail_next(1, 500)
    retried = make_event("User Login")
    httpx.post(f"{stack.url}/collect", json={"site": SITE, "events": [retried]}, headers={"Origin": ORIGIN}, timeout=10)
    wait_for(lambda: retried["id"] in str(stack.commerce.event_ids()) or len(stack.commerce.accepted) > 0)
    stack.commerce.fail_next(1, 400)
    dead = make_event("User Login")
    httpx.post(f"{stack.url}/collect", json={"site": SITE, "events": [dead]}, headers={"Origin": ORIGIN}, timeout=10)
    wait_for(lambda: sample(scrape(stack), "collector_dead_letters", site=SITE, destination="commerce") >= 1)
    after = scrape(stack)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("collector_delivery_events_total", site=SITE, destination="commerce", outcome="retried") == 1
    assert grew("collector_delivery_events_total", site=SITE, destination="commerce", outcome="dead_lettered") == 1
    assert grew("collector_vendor_answers_total", site=SITE, destination="commerce", **{"class": "5xx"}) == 1
    assert grew("collector_vendor_answers_total", site=SITE, destination="commerce", **{"class": "4xx"}) == 1
    assert sample(after, "collector_dead_letters", site=SITE, destination="commerce") == len(stack.dead_letters())


def test_lag_is_the_age_of_the_oldest_waiting_event(stack: ServeStack):
    """While a vendor hangs, the lag grows with the wait; once it answers, the lag is back to 0."""
    stack.depict.hang_next(1, 4)
    event = make_event("page_view")
    httpx.post(f"{stack.url}/collect", json={"site": SITE, "events": [event]}, headers={"Origin": ORIGIN}, timeout=10)
    time.sleep(2)
    waiting = sample(scrape(stack), "collector_lag_seconds", destination="depict")
    assert 1.5 <= waiting <= 10
    wait_for(lambda: sample(scrape(stack), "collector_lag_seconds", destination="depict") == 0)
