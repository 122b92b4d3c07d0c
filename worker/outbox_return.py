"""Put a job's deliveries back at the head of their outbox, as one entry, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis

from collector.queue import OUTBOX_REGISTRY, encode_entry, outbox_key


def return_to_outbox(redis: Redis, deliveries: Sequence[dict[str, Any]]) -> None:
    if not deliveries:
        return
    outbox = outbox_key(deliveries[0]["site"], deliveries[0]["destination"])
    with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(outbox, encode_entry(deliveries))
        pipe.sadd(OUTBOX_REGISTRY, outbox)
        pipe.execute()
