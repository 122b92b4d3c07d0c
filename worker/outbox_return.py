"""Put deliveries back at the head of their outbox, in their order, in one transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from redis import Redis

from collector.queue import OUTBOX_REGISTRY, outbox_key


def return_to_outbox(redis: Redis, deliveries: Sequence[dict[str, Any]]) -> None:
    if not deliveries:
        return
    outbox = outbox_key(deliveries[0]["site"], deliveries[0]["destination"])
    with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(outbox, *[json.dumps(delivery, separators=(",", ":")) for delivery in reversed(deliveries)])
        pipe.sadd(OUTBOX_REGISTRY, outbox)
        pipe.execute()
