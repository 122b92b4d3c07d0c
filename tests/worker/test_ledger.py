"""The delivery ledger: what each vendor already took, kept as long as a retry could need it."""

from __future__ import annotations

from collector.config import CollectorConfig
from tests.conftest import SITE
from worker.ledger import DeliveryLedger, delivered_key, ledger_seconds


def depict_delivery(*event_ids: str) -> dict:
    return {"id": "dep_1", "site": SITE, "destination": "depict", "body": [{"deduplication_id": e} for e in event_ids], "event_ids": list(event_ids)}


def test_a_retried_delivery_is_trimmed_to_the_events_not_yet_delivered(redis_client, site_config: CollectorConfig):
    """Events a vendor took are skipped on retry; the rest of the array is sent again."""
    ledger = DeliveryLedger(redis_client, ledger_seconds(site_config.settings.delivery))
    ledger.mark_delivered(depict_delivery("event-a1", "event-b2"))
    remaining = ledger.undelivered([depict_delivery("event-a1", "event-b2", "event-c3")])
    assert [delivery["event_ids"] for delivery in remaining] == [["event-c3"]]
    assert remaining[0]["body"] == [{"deduplication_id": "event-c3"}]


def test_marks_outlive_every_retry_but_not_the_dedupe_window(redis_client, site_config: CollectorConfig):
    """A mark lasts retry_for_seconds plus a margin: long enough for any retry, shorter than a day."""
    policy = site_config.settings.delivery
    DeliveryLedger(redis_client, ledger_seconds(policy)).mark_delivered(depict_delivery("event-a1"))
    ttl = redis_client.ttl(delivered_key(SITE, "depict", "event-a1"))
    assert policy.retry_for_seconds < ttl <= ledger_seconds(policy)
    assert ledger_seconds(policy) < site_config.settings.dedupe_window_seconds
