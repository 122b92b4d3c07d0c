"""The delivery ledger: what each vendor already took, kept by the job until it ends."""

from __future__ import annotations

import threading

import pytest
from redis import RedisError

from collector.config import CollectorConfig
from collector.extensions import connect_redis
from collector.redis_server import free_port
from tests.conftest import SITE
from worker.ledger import LEDGER_GRACE_SECONDS, DeliveryLedger, GroupCommit, ledger_key, ledger_seconds

THREADS = 32


def depict_delivery(*event_ids: str) -> dict:
    return {"id": "dep_1", "site": SITE, "destination": "depict", "body": [{"deduplication_id": e} for e in event_ids], "event_ids": list(event_ids)}


def test_a_retried_delivery_is_trimmed_to_the_events_not_yet_delivered(redis_client, site_config: CollectorConfig):
    """Events a vendor took are skipped on retry; the rest of the array is sent again."""
    ledger = DeliveryLedger(redis_client, ledger_seconds(site_config.settings.delivery))
    ledger.mark_delivered([("job-1", depict_delivery("event-a1", "event-b2"))])
    remaining = ledger.undelivered("job-1", [depict_delivery("event-a1", "event-b2", "event-c3")])
    assert [delivery["event_ids"] for delivery in remaining] == [["event-c3"]]
    assert remaining[0]["body"] == [{"deduplication_id": "event-c3"}]
    assert len(ledger.undelivered("job-2", [depict_delivery("event-a1")])) == 1, "another job's record is its own"


def test_a_job_forgets_its_record_when_it_ends(redis_client, site_config: CollectorConfig):
    """Once its job ends, a record lives only a short grace (for a re-run of a job killed as it ended); else the retry window."""
    policy = site_config.settings.delivery
    ledger = DeliveryLedger(redis_client, ledger_seconds(policy))
    ledger.mark_delivered([("job-1", depict_delivery("event-a1"))])
    assert policy.retry_for_seconds < redis_client.ttl(ledger_key("job-1")) <= ledger_seconds(policy)
    ledger.mark_delivered([("job-1", depict_delivery("event-b2"))])
    assert policy.retry_for_seconds < redis_client.ttl(ledger_key("job-1")) <= ledger_seconds(policy), "a later write keeps the expiry"
    ledger.forget("job-1")
    assert 0 < redis_client.ttl(ledger_key("job-1")) <= LEDGER_GRACE_SECONDS
    assert ledger.undelivered("job-1", [depict_delivery("event-a1")]) == [], "a re-run within the grace skips it"


def _mark_from_threads(marks: GroupCommit, check) -> list:
    """Each of THREADS threads marks its own delivery, then reports ``check(event_id)`` or the error it got."""
    results: list = [None] * THREADS
    start = threading.Barrier(THREADS)

    def one(index: int) -> None:
        event_id = f"event-{index:04d}"
        start.wait()
        try:
            marks.mark_delivered("job-1", depict_delivery(event_id))
            results[index] = check(event_id)
        except RedisError as error:
            results[index] = error

    threads = [threading.Thread(target=one, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), "a thread still waits for its mark"
    return results


def test_each_thread_returns_only_once_its_own_mark_is_in_redis(redis_client, site_config: CollectorConfig):
    """Marks written together still hold the rule: nothing else is sent before the vendor's yes is recorded."""
    marks = GroupCommit(DeliveryLedger(redis_client, ledger_seconds(site_config.settings.delivery)))
    results = _mark_from_threads(marks, lambda event_id: redis_client.hexists(ledger_key("job-1"), event_id))
    assert results == [1] * THREADS


def test_a_failed_write_raises_in_every_thread_it_carried(site_config: CollectorConfig):
    """With Redis gone, every waiting thread gets the error (its job then retries); none is left hanging."""
    unreachable = connect_redis(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    marks = GroupCommit(DeliveryLedger(unreachable, ledger_seconds(site_config.settings.delivery)))
    results = _mark_from_threads(marks, lambda event_id: "returned without error")
    assert all(isinstance(result, RedisError) for result in results)
    with pytest.raises(RedisError):
        marks.mark_delivered("job-1", depict_delivery("event-later"))
