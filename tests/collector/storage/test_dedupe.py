"""The dedupe structure: exact within the window, compact, per site."""

from __future__ import annotations

import time

from redis import Redis

from collector.storage import dedupe
from collector.storage.outbox import Delivery, Outbox

HOUR = 3600
GENERATION = dedupe.GENERATION_SECONDS
WINDOW = 24 * HOUR


def _delivery(site: str, event_id: str) -> Delivery:
    return Delivery(id=f"d-{event_id}", site=site, destination="commerce", body={"name": "x"}, event_ids=(event_id,))


def enqueue(outbox: Outbox, site: str, event_ids: list[str], now: float) -> list[str]:
    return outbox.try_enqueue(site, event_ids, [_delivery(site, event_id) for event_id in event_ids], now=now)


def test_an_id_is_a_duplicate_until_the_window_has_passed(redis_client: Redis):
    """Seen again one second before the window ends: a duplicate; the shard holding it lives past the window."""
    outbox, start = Outbox(redis_client, WINDOW), 1_800_000_000.0  # the start of a generation
    assert enqueue(outbox, "shop", ["event-0001"], start) == []
    for later in (1, HOUR, 12 * HOUR, WINDOW - 1):
        assert enqueue(outbox, "shop", ["event-0001"], start + later) == ["event-0001"], later
    shard = next(iter(redis_client.scan_iter("collector:seen:shop:*")))
    assert WINDOW <= redis_client.ttl(shard) <= WINDOW + GENERATION + 1


def test_an_id_is_forgotten_only_past_the_window_and_its_generation(redis_client: Redis):
    """A lookup checks every generation the window can reach, and no older one."""
    outbox, start = Outbox(redis_client, WINDOW), 1_800_000_000.0 + GENERATION - 1  # the last second of a generation
    assert enqueue(outbox, "shop", ["event-0001"], start) == []
    assert enqueue(outbox, "shop", ["event-0001"], start + WINDOW) == ["event-0001"]  # a window later: still checked
    assert enqueue(outbox, "shop", ["event-0001"], start + WINDOW + GENERATION + 1) == []  # past window and generation


def test_generations_roll_over_with_shards_sized_from_the_last_one(redis_client: Redis):
    """A generation after a busy one spreads its ids over more shards; ids of both stay duplicates."""
    outbox, start = Outbox(redis_client, WINDOW), 1_800_000_000.0
    busy = [f"busy-{number:06d}" for number in range(2000)]
    for chunk in range(0, len(busy), 50):
        assert enqueue(outbox, "shop", busy[chunk : chunk + 50], start + 10) == []
    assert enqueue(outbox, "shop", ["next-000001"], start + GENERATION + 10) == []
    bits = int(redis_client.hget(dedupe.meta_key("shop"), str(dedupe.generation_of(start + GENERATION))))
    assert bits == dedupe.shard_bits_for(2000 * dedupe.GROWTH_MARGIN) > 0
    later = start + 2 * GENERATION
    assert enqueue(outbox, "shop", ["busy-000007", "next-000001"], later) == ["busy-000007", "next-000001"]


def test_shards_stay_compact(redis_client: Redis):
    """Under a steady load a shard keeps its intset encoding, and an id costs about 9 bytes."""
    outbox, start = Outbox(redis_client, WINDOW), 1_800_000_000.0
    for generation, count in enumerate((30000, 30000)):  # the second generation is sized from the first
        moment = start + generation * GENERATION + 5
        ids = [f"g{generation}-{number:06d}" for number in range(count)]
        for chunk in range(0, count, 50):
            enqueue(outbox, "shop", ids[chunk : chunk + 50], moment)
    generation = dedupe.generation_of(start + GENERATION)
    shards = list(redis_client.scan_iter(f"collector:seen:shop:i{generation}:*", count=1000))
    encodings = {redis_client.object("encoding", shard) for shard in shards}
    assert encodings == {b"intset"}, encodings
    used = sum(redis_client.memory_usage(shard) for shard in shards)
    assert used / 30000 < 12, f"{used / 30000:.1f} bytes per id"


def test_a_first_generation_grows_finer_layouts_and_finds_every_id(redis_client: Redis):
    """A new site's first hours start with 64 shards and add finer layouts as they fill: compact, and still exact."""
    outbox, start = Outbox(redis_client, WINDOW), 1_800_000_000.0
    ids = [f"first-{number:06d}" for number in range(30000)]
    for chunk in range(0, len(ids), 50):
        assert enqueue(outbox, "new_shop", ids[chunk : chunk + 50], start + 5) == []
    layouts = redis_client.hget(dedupe.meta_key("new_shop"), str(dedupe.generation_of(start))).decode().split(",")
    assert layouts == [str(dedupe.FIRST_SHARD_BITS), str(dedupe.FIRST_SHARD_BITS + dedupe.GROWTH_BITS)]
    encodings = {redis_client.object("encoding", shard) for shard in redis_client.scan_iter("collector:seen:new_shop:*", count=1000)}
    assert encodings == {b"intset"}, encodings
    sample = ids[::1000]
    assert enqueue(outbox, "new_shop", sample, start + 10) == sample
    assert enqueue(outbox, "new_shop", sample, start + GENERATION + 10) == sample  # from the next generation too


def test_two_sites_may_use_the_same_ids(redis_client: Redis):
    """Dedupe is per site: the same event id from another site is new."""
    outbox, now = Outbox(redis_client, WINDOW), time.time()
    assert enqueue(outbox, "shop_a", ["event-0001"], now) == []
    assert enqueue(outbox, "shop_b", ["event-0001"], now) == []
    assert enqueue(outbox, "shop_a", ["event-0001"], now) == ["event-0001"]


def test_the_false_positive_bound_is_below_one_in_a_billion():
    """A lookup compares with at most a window of full shards; 53-bit fingerprints keep a false match below 1e-9."""
    compared = dedupe.generations_in_window(WINDOW) * 512  # Redis' set-max-intset-entries
    assert compared / 2**dedupe.FINGERPRINT_BITS < 1e-9
    fingerprints = {dedupe.fingerprint("shop", f"event-{number}") for number in range(200_000)}
    assert len(fingerprints) == 200_000
    assert dedupe.fingerprint("shop_a", "x") != dedupe.fingerprint("shop_b", "x")
    assert all(0 <= value < 2**dedupe.FINGERPRINT_BITS for value in fingerprints)
