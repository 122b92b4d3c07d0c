"""The delivery ledger: what each vendor already took, kept by the job until it ends."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis import RedisError

from collector.config.schema import CollectorConfig
from collector.extensions import connect_redis
from collector.storage.redis_server import free_port
from tests.conftest import SITE
from worker.ledger import LEDGER_GRACE_SECONDS, DeliveryLedger, GroupCommit, ledger_key, ledger_seconds

SENDS = 32


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


def _mark_concurrently(marks: GroupCommit, check, run_async) -> list:
    """SENDS sends on one event loop each mark their own delivery, then report ``check(event_id)`` or the error they got."""

    async def one(index: int):
        event_id = f"event-{index:04d}"
        try:
            await marks.mark_delivered("job-1", [depict_delivery(event_id)])
        except RedisError as error:
            return error
        return check(event_id)

    async def all_of_them() -> list:
        return await asyncio.wait_for(asyncio.gather(*(one(index) for index in range(SENDS))), timeout=10)

    return run_async(all_of_them)


def test_each_send_returns_only_once_its_own_mark_is_in_redis(redis_client, site_config: CollectorConfig, run_async):
    """Marks written together still hold the rule: a send keeps its place until the vendor's yes is recorded."""
    with ThreadPoolExecutor(max_workers=1) as writer:
        marks = GroupCommit(DeliveryLedger(redis_client, ledger_seconds(site_config.settings.delivery)), writer)
        results = _mark_concurrently(marks, lambda event_id: redis_client.hexists(ledger_key("job-1"), event_id), run_async)
    assert results == [1] * SENDS


def test_a_failed_write_raises_in_every_send_it_carried(site_config: CollectorConfig, run_async):
    """With Redis gone, every waiting send gets the error (its job then retries); none is left hanging."""
    unreachable = connect_redis(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with ThreadPoolExecutor(max_workers=1) as writer:
        marks = GroupCommit(DeliveryLedger(unreachable, ledger_seconds(site_config.settings.delivery)), writer)
        results = _mark_concurrently(marks, lambda event_id: "returned without error", run_async)
        assert all(isinstance(result, RedisError) for result in results)
        with pytest.raises(RedisError):
            run_async(lambda: marks.mark_delivered("job-1", [depict_delivery("event-later")]))


def test_a_cancelled_send_leaves_the_others_of_its_write_alone(redis_client, site_config: CollectorConfig, run_async):
    """A send cancelled while its mark is on its way (its job ended) does not cancel the sends whose marks go in the same write."""

    async def cancel_one_of_three() -> list:
        deliveries = [depict_delivery(f"event-{index}") for index in range(3)]
        sends = [asyncio.ensure_future(marks.mark_delivered("job-1", [delivery])) for delivery in deliveries]
        await asyncio.sleep(0)
        sends[0].cancel()
        return await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), timeout=10)

    with ThreadPoolExecutor(max_workers=1) as writer:
        marks = GroupCommit(DeliveryLedger(redis_client, ledger_seconds(site_config.settings.delivery)), writer)
        outcomes = run_async(cancel_one_of_three)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert outcomes[1:] == [None, None]
    assert sorted(redis_client.hkeys(ledger_key("job-1"))) == [b"event-0", b"event-1", b"event-2"], "every mark of the write is written"
