"""``collector replay``: put dead-lettered deliveries back into their outboxes, or purge them.

A replayed delivery keeps its id (and its events' ids), so the vendors see
the same idempotency keys and the delivery ledger skips any that had in
fact arrived. Each entry moves in one MULTI/EXEC: pushed to its outbox and
removed from the dead letters together. Purging is the only way a dead
letter leaves without being delivered.
"""

from __future__ import annotations

from redis import Redis

from collector.storage.outbox import OUTBOX_REGISTRY, encode_entry, outbox_key, wake_dispatchers
from worker.dead_letters import DEAD_LETTERS, DeadLetter, DeadLetters, dead_letter_field


def _matches(letter: DeadLetter, site: str | None, destination: str | None, status: int | None, delivery_id: str | None = None) -> bool:
    delivery = letter.delivery
    return (
        (site is None or delivery["site"] == site)
        and (destination is None or delivery["destination"] == destination)
        and (status is None or letter.status == status)
        and (delivery_id is None or delivery["id"] == delivery_id)
    )


def dead_letters_matching(
    redis: Redis, site: str | None = None, destination: str | None = None, status: int | None = None, delivery_id: str | None = None
) -> list[DeadLetter]:
    return [letter for letter in DeadLetters(redis) if _matches(letter, site, destination, status, delivery_id)]


def purge_dead_letters(
    redis: Redis, site: str | None = None, destination: str | None = None, status: int | None = None, delivery_id: str | None = None
) -> list[DeadLetter]:
    """Delete the matching dead letters for good; return what was deleted."""
    chosen = dead_letters_matching(redis, site, destination, status, delivery_id)
    if chosen:
        redis.hdel(DEAD_LETTERS, *[dead_letter_field(letter.delivery) for letter in chosen])
    return chosen


def replay_dead_letters(
    redis: Redis,
    site: str | None = None,
    destination: str | None = None,
    status: int | None = None,
    dry_run: bool = False,
    delivery_id: str | None = None,
) -> list[DeadLetter]:
    chosen = dead_letters_matching(redis, site, destination, status, delivery_id)
    if dry_run:
        return chosen
    for letter in chosen:
        delivery = letter.delivery
        outbox = outbox_key(delivery["site"], delivery["destination"])
        with redis.pipeline(transaction=True) as pipe:
            pipe.rpush(outbox, encode_entry([delivery]))
            pipe.sadd(OUTBOX_REGISTRY, outbox)
            pipe.hdel(DEAD_LETTERS, dead_letter_field(delivery))
            pipe.execute()
    if chosen:
        wake_dispatchers(redis)
    return chosen
