"""Put a job's deliveries back in their outbox, as one entry, in one transaction.

They go to the tail, as every write to an outbox does. The dispatcher reads
entries from the head and then trims as many as it took; a push at the head
between the two would shift the list under it, so the trim would drop the
returned entry and leave one it had already put in a job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis

from collector.storage.outbox import OUTBOX_REGISTRY, encode_entry, outbox_key


def return_to_outbox(redis: Redis, deliveries: Sequence[dict[str, Any]]) -> None:
    if not deliveries:
        return
    outbox = outbox_key(deliveries[0]["site"], deliveries[0]["destination"])
    with redis.pipeline(transaction=True) as pipe:
        pipe.rpush(outbox, encode_entry(deliveries))
        pipe.sadd(OUTBOX_REGISTRY, outbox)
        pipe.execute()
