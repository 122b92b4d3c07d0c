"""A delivery that cannot be sent settles: dead-lettered with its reason, alone, within the retry window."""

from __future__ import annotations

import time

import pytest
from redis import Redis

from collector.config.schema import CollectorConfig
from collector.inbound.enrich import RequestContext
from collector.mapping.routing import build_deliveries
from collector.storage.outbox import Outbox
from tests.conftest import COMMERCE_KEY, SITE
from tests.factories import make_event
from worker.dead_letters import DeadLetters, masked
from worker.jobs import forward_deliveries
from worker.runtime import WorkerRuntime, install


def _context(user_agent: str) -> RequestContext:
    return RequestContext("127.0.0.1", user_agent, None, "collect.example", time.time(), "visitor_poison1", False)


def _wait_for(predicate, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_unsendable_deliveries_are_dead_lettered_alone_and_the_rest_delivered_once(live_stack, site_config):
    """A header that is not ASCII and a lone surrogate in a body (queued by an older collector) each dead-letter
    with the error as reason, while the deliveries in the same job arrive once and are never resent."""
    redis = Redis.from_url(live_stack.redis_url)
    site = site_config.sites[SITE]
    good = [make_event("User Login") for _ in range(3)] + [make_event("page_view")]
    broken = make_event("User \ud800 Login")
    deliveries = build_deliveries(site, [*good, broken], _context("Mozilla/5.0 (caf\xe9)"))
    assert Outbox(redis, 3600).try_enqueue(SITE, [event["id"] for event in [*good, broken]], deliveries) == []

    dead = DeadLetters(redis)

    def settled() -> bool:
        return len(live_stack.commerce.event_ids()) >= 4 and len(dead) >= 2

    assert _wait_for(settled), f"commerce got {live_stack.commerce.event_ids()}, dead letters {[l.reason for l in dead]}"
    letters = {letter.delivery["destination"]: letter for letter in dead if letter.delivery["site"] == SITE}
    assert "UnicodeEncodeError" in letters["depict"].reason and "cannot be sent as HTTP" in letters["depict"].reason
    assert letters["commerce"].delivery["event_ids"] == [broken["id"]]
    assert "UnicodeEncodeError" in letters["commerce"].reason
    time.sleep(2)  # long enough for a retry at the test config's 0.5 s base interval
    assert live_stack.commerce.duplicates() == []
    ours = {event["id"] for event in [*good, broken]}
    sent_to_depict = [event for request in live_stack.depict.requests for event in request.json]
    assert not [event for event in sent_to_depict if event.get("deduplication_id") in ours]  # an earlier test's may arrive


def test_a_vendor_answer_that_echoes_the_key_is_masked_in_the_dead_letter(live_stack):
    """A dead letter keeps the vendor's answer with the site's API key replaced by ***."""
    import httpx

    from tests.conftest import ORIGIN

    live_stack.commerce.fail_next(1, 400, body={"message": f"request with key {COMMERCE_KEY} is malformed"})
    event = make_event("User Login")
    httpx.post(f"{live_stack.url}/collect", json={"site": SITE, "events": [event]}, headers={"Origin": ORIGIN}, timeout=10)
    dead = DeadLetters(Redis.from_url(live_stack.redis_url))
    assert _wait_for(lambda: any(letter.delivery["event_ids"] == [event["id"]] for letter in dead))
    [letter] = [letter for letter in dead if letter.delivery["event_ids"] == [event["id"]]]
    assert letter.status == 400 and COMMERCE_KEY not in letter.answer and "***" in letter.answer


def test_masking_covers_every_key_and_caps_the_size():
    """Every configured key is masked, the longest first, and what is kept is cut to 1,000 characters."""
    text = "key-1 and key-10 " + "x" * 5000
    kept = masked(text, ["key-1", "key-10"])
    assert kept.startswith("*** and *** ") and len(kept) == 1000


@pytest.fixture
def stopped_runtime(site_config: CollectorConfig, redis_client: Redis):
    """A worker runtime whose sender is closed, so a job fails as a whole, not per delivery."""
    runtime = WorkerRuntime.start(site_config, redis_client)
    runtime.sender.close()
    install(runtime)
    yield runtime
    install(None)
    runtime.close()


def _commerce_deliveries(site_config: CollectorConfig, queued_at: float) -> list[dict]:
    deliveries = build_deliveries(site_config.sites[SITE], [make_event("User Login")], _context("Mozilla/5.0"))
    return [delivery.as_dict(queued_at) for delivery in deliveries if delivery.destination == "commerce"]


def test_a_job_failing_as_a_whole_is_retried_inside_the_window(stopped_runtime, site_config):
    """While its deliveries are younger than retry_for_seconds, a job's own error goes to RQ for a retry."""
    with pytest.raises(RuntimeError):
        forward_deliveries(_commerce_deliveries(site_config, time.time()))
    assert len(stopped_runtime.dead_letters) == 0


def test_a_job_failing_as_a_whole_is_dead_lettered_past_the_window(stopped_runtime, site_config):
    """Past retry_for_seconds, the job's deliveries are dead-lettered with the error as reason instead of retried."""
    window = site_config.settings.delivery.retry_for_seconds
    summary = forward_deliveries(_commerce_deliveries(site_config, time.time() - window - 1))
    assert summary["dead"] == 1
    [letter] = list(stopped_runtime.dead_letters)
    assert letter.reason.startswith(f"gave up after {window:g} s: RuntimeError")
