"""The dispatcher: outbox entries into RQ jobs, each delivery in exactly one place."""

from __future__ import annotations

from redis import Redis

from collector.config.schema import CollectorConfig
from collector.storage.outbox import decode_entry, encode_entry, outbox_key
from tests.conftest import SITE
from worker.dispatch import MAX_WAITING_JOBS, Dispatcher, delivery_queue
from worker.outbox_return import return_to_outbox

OUTBOX = outbox_key(SITE, "commerce")


def delivery(number: int, events: int = 1) -> dict:
    event_ids = [f"event{number:04d}-{index}" for index in range(events)]
    return {"id": f"d{number}", "site": SITE, "destination": "commerce", "headers": {}, "body": {}, "event_ids": event_ids, "queued_at": 0}


def in_jobs(redis: Redis) -> list[str]:
    return [d["id"] for job in delivery_queue(redis, "commerce").jobs for d in job.args[0]]


def in_outbox(redis: Redis) -> list[str]:
    return [d["id"] for entry in redis.lrange(OUTBOX, 0, -1) for d in decode_entry(entry)]


def test_whole_entries_make_a_job_of_at_most_deliveries_per_job(redis_client, site_config: CollectorConfig):
    """Entries of 10 deliveries each are packed two to a 20-delivery job; none is split."""
    for first in range(0, 50, 10):
        redis_client.rpush(OUTBOX, encode_entry([delivery(n) for n in range(first, first + 10)]))
    Dispatcher(redis_client, site_config.settings.delivery).drain(OUTBOX)
    sizes = [len(job.args[0]) for job in delivery_queue(redis_client, "commerce").jobs]
    assert sizes == [20, 20, 10]
    assert in_outbox(redis_client) == []


def test_an_array_of_events_counts_its_events_toward_a_jobs_size(redis_client, site_config: CollectorConfig):
    """Depict arrays of 10 events fill a 20-event job two at a time, as 20 single-event deliveries would."""
    for number in range(5):
        redis_client.rpush(OUTBOX, encode_entry([delivery(number, events=10)]))
    Dispatcher(redis_client, site_config.settings.delivery).drain(OUTBOX)
    assert [len(job.args[0]) for job in delivery_queue(redis_client, "commerce").jobs] == [2, 2, 1]


def test_only_a_few_jobs_wait_and_the_rest_stays_in_the_outbox(redis_client, site_config: CollectorConfig):
    """A backlog stays compressed in the outbox: the dispatcher keeps at most MAX_WAITING_JOBS queued."""
    for number in range(MAX_WAITING_JOBS * 20 + 5):
        redis_client.rpush(OUTBOX, encode_entry([delivery(number)]))
    Dispatcher(redis_client, site_config.settings.delivery).drain(OUTBOX)
    assert len(delivery_queue(redis_client, "commerce").jobs) == MAX_WAITING_JOBS
    assert len(in_outbox(redis_client)) == 5


def test_deliveries_returned_while_the_dispatcher_works_are_kept_once(redis_client, site_config: CollectorConfig, monkeypatch):
    """A job parking its deliveries between the dispatcher's read and trim loses none and doubles none."""
    redis_client.rpush(OUTBOX, encode_entry([delivery(1)]), encode_entry([delivery(2)]))
    read = redis_client.lrange

    def read_then_a_job_returns_deliveries(*args):
        entries = read(*args)
        return_to_outbox(redis_client, [delivery(3)])
        return entries

    monkeypatch.setattr(redis_client, "lrange", read_then_a_job_returns_deliveries)
    Dispatcher(redis_client, site_config.settings.delivery)._move_one_batch(OUTBOX)
    monkeypatch.undo()
    assert sorted(in_jobs(redis_client) + in_outbox(redis_client)) == ["d1", "d2", "d3"]
