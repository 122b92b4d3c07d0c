"""Which event ids a site already accepted within the dedupe window, in about 15 bytes of Redis each.

A key per event id (``SET seen:<site>:<id> EX``) costs Redis about 125
bytes; at 1,000 events/s that alone is 10 GiB over the 24-hour window. So
each id is kept as a 64-bit fingerprint (the first 8 bytes of BLAKE2b of
``site:id``) in small hashes that Redis keeps in its compact listpack
encoding (up to 128 entries of at most 64 bytes, Redis' defaults):

- Time is cut in *generations* of :data:`GENERATION_SECONDS` (4 hours). A
  generation's fingerprints live in ``2**k`` *shards*,
  ``collector:seen:<site>:<generation>:<shard>``, the shard named by the
  fingerprint's top ``k`` bits; each shard expires once the window has
  passed over its generation's end, so an id is remembered for at least the
  window and at most one generation longer.
- ``k`` is fixed when a generation starts, from the previous generation's
  count (kept in ``collector:seen-meta:<site>``), so that a shard holds
  about :data:`TARGET_PER_SHARD` fingerprints: fewer shards would leave the
  listpack encoding, more would pay a key's overhead for a few entries.
  Each process remembers the bits of the generations it has seen
  (:class:`GenerationShards`): they never change once set.
- A lookup checks the id's shard in every generation of the window that
  holds ids (at most 7 for 24 hours: one-hour generations made 25 lookups
  per id and tripled the Redis CPU of a request); it runs inside the
  enqueue script (``collector/queue.py``), atomically with the queueing.

Two different ids of a site are taken for one only if their fingerprints
are equal: a lookup compares against at most about 7 x 128 fingerprints,
so the chance is below 7 * 128 / 2**64, about 5 in 10**17 per lookup.
"""

from __future__ import annotations

import hashlib
import math

from redis import Redis

from collector.defaults import REDIS_KEY_PREFIX as KEY_PREFIX

GENERATION_SECONDS = 4 * 3600  # a lookup checks 7 generations for a 24-hour window; shards adapt every 4 hours
TARGET_PER_SHARD = 48  # a Poisson spread around this stays well under Redis' 128-entry listpack limit
GROWTH_MARGIN = 2  # room for a generation to take twice its predecessor's traffic before shards outgrow listpacks
MAX_SHARD_BITS = 24
FINGERPRINT_BYTES = 8


def fingerprint(site: str, event_id: str) -> bytes:
    """The 8 bytes that stand for ``site:event_id`` in the dedupe shards."""
    return hashlib.blake2b(f"{site}:{event_id}".encode(), digest_size=FINGERPRINT_BYTES).digest()


def generation_of(moment: float) -> int:
    return int(moment // GENERATION_SECONDS)


def generations_in_window(window_seconds: int) -> int:
    """How many generations a lookup checks: every one that may hold an id accepted within the window."""
    return math.ceil(window_seconds / GENERATION_SECONDS) + 1


def shard_bits_for(expected: int) -> int:
    """``k`` such that ``expected`` fingerprints fill ``2**k`` shards to about ``TARGET_PER_SHARD`` each."""
    if expected <= TARGET_PER_SHARD:
        return 0
    return min(MAX_SHARD_BITS, math.ceil(math.log2(expected / TARGET_PER_SHARD)))


def shard_prefix(site: str) -> str:
    """``collector:seen:<site>:``; the script appends ``<generation>:<shard>``."""
    return f"{KEY_PREFIX}seen:{site}:"


def meta_key(site: str) -> str:
    """Per generation: its shard bits (``<generation>``) and its count (``<generation>:n``)."""
    return f"{KEY_PREFIX}seen-meta:{site}"


# The dedupe part of the enqueue script (see collector/queue.py for the whole).
# In: the fingerprints FP[1..n], the site's shard prefix and meta key, the
# current generation, how many generations the window spans, the shard TTL.
class GenerationShards:
    """Each generation's shard bits, read from Redis once per process and generation, then remembered.

    A generation's bits never change once set: the first writer of a
    generation sets them (``HSETNX``) from the previous generation's count,
    and a past generation without bits never gets any. So the enqueue
    script is handed them instead of reading the meta hash on every request.
    """

    def __init__(self, redis: Redis, window_seconds: int):
        self._redis = redis
        self._span = generations_in_window(window_seconds)
        self._known: dict[tuple[str, int], int | None] = {}

    def window(self, site: str, now: float) -> list[tuple[int, int]]:
        """``(generation, bits)`` of every generation of the window that holds ids, newest first."""
        current = generation_of(now)
        generations = range(current, current - self._span, -1)
        if any((site, generation) not in self._known for generation in generations):
            self._learn(site, current)
        pairs = [(generation, self._known.get((site, generation))) for generation in generations]
        return [(generation, bits) for generation, bits in pairs if bits is not None]

    def _learn(self, site: str, current: int) -> None:
        meta = meta_key(site)
        if self._redis.hget(meta, str(current)) is None:
            previous = int(self._redis.hget(meta, f"{current - 1}:n") or 0)
            self._redis.hsetnx(meta, str(current), shard_bits_for(previous * GROWTH_MARGIN))
        generations = list(range(current, current - self._span, -1))
        found = self._redis.hmget(meta, [str(generation) for generation in generations])
        for generation, bits in zip(generations, found):
            self._known[(site, generation)] = int(bits) if bits is not None else None
        for stale in [key for key in self._known if key[0] == site and key[1] <= current - self._span]:
            del self._known[stale]


# The dedupe part of the enqueue script (see collector/queue.py for the whole):
# GENERATIONS is a flat list of generation, 2^(32 - bits), newest (the current one) first.
LUA_FUNCTIONS = """
local function top_bits(fp)
  return ((string.byte(fp, 1) * 256 + string.byte(fp, 2)) * 256 + string.byte(fp, 3)) * 256 + string.byte(fp, 4)
end

-- the 0-based indexes of the fingerprints already present in any generation of the window
local function already_seen(prefix, generations, fps, tops)
  local seen = {}
  for i, fp in ipairs(fps) do
    for g = 1, #generations, 2 do
      local key = prefix .. generations[g] .. ':' .. math.floor(tops[i] / generations[g + 1])
      if redis.call('HEXISTS', key, fp) == 1 then
        seen[#seen + 1] = i - 1
        break
      end
    end
  end
  return seen
end

-- remember the fingerprints in the current generation; a shard gets its expiry when it is made
local function remember(prefix, meta, generations, fps, tops, ttl)
  local current, divisor = generations[1], generations[2]
  for i, fp in ipairs(fps) do
    local key = prefix .. current .. ':' .. math.floor(tops[i] / divisor)
    redis.call('HSET', key, fp, '')
    if redis.call('HLEN', key) == 1 then redis.call('EXPIRE', key, ttl) end
  end
  if redis.call('HINCRBY', meta, current .. ':n', #fps) == #fps then redis.call('EXPIRE', meta, ttl) end
end
"""


def script_generations(pairs: list[tuple[int, int]]) -> list[int]:
    """The script's GENERATIONS: generation, then the divisor that turns a fingerprint's top 32 bits into its shard."""
    return [number for generation, bits in pairs for number in (generation, 2 ** (32 - bits))]


def shard_ttl_seconds(window_seconds: int, now: float) -> int:
    """A shard written now lives until the window has passed over its generation's end."""
    generation_end = (generation_of(now) + 1) * GENERATION_SECONDS
    return int(generation_end + window_seconds - now) + 1
