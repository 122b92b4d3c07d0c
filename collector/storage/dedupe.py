"""Which event ids a site already accepted within the dedupe window, in about 9 bytes of Redis each.

A key per event id (``SET seen:<site>:<id> EX``) costs Redis about 125
bytes; at 1,000 events/s that alone is 10 GiB over the 24-hour window. So
each id is kept as a 53-bit fingerprint (BLAKE2b of ``site:id``, cut to
53 bits so that the enqueue script's Lua numbers hold it exactly) in small
sets of integers, which Redis keeps as *intsets*: a sorted array of 8-byte
integers (up to ``set-max-intset-entries``, 512 by default), looked up by
binary search. (Listpack hashes of 8-byte strings, the earlier layout, took
13-20 bytes an id and were searched entry by entry: a lookup cost 4 µs
of Redis CPU against 0.25 µs.)

- Time is cut in *generations* of :data:`GENERATION_SECONDS` (4 hours). A
  generation's fingerprints live in ``2**k`` *shards*,
  ``collector:seen:<site>:i<generation>:<shard>``, the shard named by the
  fingerprint's top ``k`` bits; each shard expires once the window has
  passed over its generation's end, so an id is remembered for at least the
  window and at most one generation longer.
- ``k`` is set when a generation starts, from the previous generation's
  count (kept in ``collector:seen-meta:<site>``), so that a shard holds
  about :data:`TARGET_PER_SHARD` fingerprints or fewer: more shards would
  pay a key's overhead (about 70 bytes) for a few entries, fuller ones
  would leave the intset encoding. A generation that outgrows its ``k``
  (a first one, a surge) adds a finer layout for its later ids; its
  lookups check each of its layouts. Each process remembers the layouts of
  past generations (:class:`GenerationShards`): they never change once a
  generation ends.
- A lookup checks the id's shard in every generation of the window that
  holds ids (at most 7 for 24 hours); it runs inside the enqueue script
  (``collector/storage/outbox.py``), atomically with the queueing.

Two different ids of a site are taken for one only if their fingerprints
are equal: a lookup compares against at most about 7 x 512 fingerprints,
so the chance is below 7 * 512 / 2**53, about 4 in 10**13 per lookup.

The ``i`` before the generation keeps these sets apart from the listpack
hashes of earlier versions, which expire on their own after an upgrade
(ids accepted before it are then not recognised as repeats).
"""

from __future__ import annotations

import hashlib
import math

from redis import Redis

from collector.config.defaults import REDIS_KEY_PREFIX as KEY_PREFIX

GENERATION_SECONDS = 4 * 3600  # a lookup checks 7 generations for a 24-hour window; shards adapt every 4 hours
TARGET_PER_SHARD = 192  # a shard grows a finer layout at twice this: a Poisson spread stays under Redis' 512-entry intsets
GROWTH_MARGIN = 2  # room for a generation to take twice its predecessor's traffic before shards outgrow listpacks
MAX_SHARD_BITS = 24
FIRST_SHARD_BITS = 6  # a site's first generation starts with 64 shards: a few kilobytes, and room for 24,000 ids
GROWTH_BITS = 2  # a generation that outgrows its layout adds one with 4 times the shards
FINGERPRINT_BITS = 53  # the largest integer a Lua number (a double) holds exactly


def fingerprint(site: str, event_id: str) -> int:
    """The 53-bit number that stands for ``site:event_id`` in the dedupe shards."""
    digest = hashlib.blake2b(f"{site}:{event_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - FINGERPRINT_BITS)


def generation_of(moment: float) -> int:
    return int(moment // GENERATION_SECONDS)


def generations_in_window(window_seconds: int) -> int:
    """How many generations a lookup checks: every one that may hold an id accepted within the window."""
    return math.ceil(window_seconds / GENERATION_SECONDS) + 1


def shard_bits_for(expected: int) -> int:
    """``k`` such that ``expected`` fingerprints fill ``2**k`` shards to about ``TARGET_PER_SHARD`` each."""
    if expected == 0:
        return FIRST_SHARD_BITS
    if expected <= TARGET_PER_SHARD:
        return 0
    return min(MAX_SHARD_BITS, math.ceil(math.log2(expected / TARGET_PER_SHARD)))


def shard_prefix(site: str) -> str:
    """``collector:seen:<site>:i``; the script appends ``<generation>:<shard>``."""
    return f"{KEY_PREFIX}seen:{site}:i"


def meta_key(site: str) -> str:
    """Per generation: its shard bits (``<generation>``) and its count (``<generation>:n``)."""
    return f"{KEY_PREFIX}seen-meta:{site}"


# The dedupe part of the enqueue script (see collector/storage/outbox.py for the whole).
# In: the fingerprints FP[1..n], the site's shard prefix and meta key, the
# current generation, how many generations the window spans, the shard TTL.
class GenerationShards:
    """The shard bits of the window's past generations, read from Redis once per process, then remembered.

    A generation's bits change only while it is the current one (the
    script adds a finer layout when it fills up); once it is past they are
    final. So the enqueue script is handed the past generations' bits, and
    reads only the current generation's itself.
    """

    def __init__(self, redis: Redis, window_seconds: int):
        self._redis = redis
        self._span = generations_in_window(window_seconds)
        self._known: dict[tuple[str, int], tuple[int, ...]] = {}

    def past(self, site: str, now: float) -> list[tuple[int, int]]:
        """``(generation, bits)`` for every layout of the window's past generations, newest first."""
        current = generation_of(now)
        generations = range(current - 1, current - self._span, -1)
        if any((site, generation) not in self._known for generation in generations):
            self._learn(site, list(generations), current)
        return [(generation, bits) for generation in generations for bits in self._known[(site, generation)]]

    def _learn(self, site: str, generations: list[int], current: int) -> None:
        found = self._redis.hmget(meta_key(site), [str(generation) for generation in generations])
        for generation, layouts in zip(generations, found):
            text = layouts.decode() if isinstance(layouts, bytes) else layouts or ""
            self._known[(site, generation)] = tuple(int(bits) for bits in reversed(text.split(",")) if bits)
        for stale in [key for key in self._known if key[0] == site and key[1] <= current - self._span]:
            del self._known[stale]


# The dedupe part of the enqueue script (see collector/storage/outbox.py for the whole):
# PAST is a flat list of generation, 2^(32 - bits) for every layout of the window's past generations.
LUA_FUNCTIONS = """
local function top_bits(fp)
  return math.floor(tonumber(fp) / 2097152)  -- the top 32 of 53 bits (2^21 = 2097152)
end

local function bits_needed(count, target, margin, max_bits, first_bits)
  if count == 0 then return first_bits end
  local expected = count * margin
  if expected <= target then return 0 end
  return math.min(max_bits, math.ceil(math.log(expected / target) / math.log(2)))
end

-- the current generation's layouts (bits), oldest first; the first request of a generation sizes it
local function current_layouts(meta, current, span, target, margin, max_bits, first_bits)
  local text = redis.call('HGET', meta, current)
  if not text then
    local previous = tonumber(redis.call('HGET', meta, (current - 1) .. ':n') or '0')
    text = tostring(bits_needed(previous, target, margin, max_bits, first_bits))
    redis.call('HSET', meta, current, text)
    redis.call('HDEL', meta, current - span, (current - span) .. ':n')
  end
  local layouts = {}
  for bits in string.gmatch(text, '%d+') do layouts[#layouts + 1] = tonumber(bits) end
  return layouts, text
end

-- the 0-based indexes of the fingerprints already present in the window: current layouts, then PAST
local function already_seen(prefix, current, layouts, past, fps, tops)
  local seen = {}
  for i, fp in ipairs(fps) do
    local found = false
    for l = #layouts, 1, -1 do
      if redis.call('SISMEMBER', prefix .. current .. ':' .. math.floor(tops[i] / 2 ^ (32 - layouts[l])), fp) == 1 then
        found = true
        break
      end
    end
    for g = 1, #past, 2 do
      if found then break end
      if redis.call('SISMEMBER', prefix .. past[g] .. ':' .. math.floor(tops[i] / past[g + 1]), fp) == 1 then found = true end
    end
    if found then seen[#seen + 1] = i - 1 end
  end
  return seen
end

-- remember the fingerprints in the current generation's newest layout; a shard gets its expiry when it is made.
-- When the generation outgrows that layout (shards would leave the compact encoding), a finer one is added.
local function remember(prefix, meta, current, layouts, text, fps, tops, ttl, target, margin, max_bits, growth_bits)
  local bits = layouts[#layouts]
  local divisor = 2 ^ (32 - bits)
  for i, fp in ipairs(fps) do
    local key = prefix .. current .. ':' .. math.floor(tops[i] / divisor)
    if redis.call('SADD', key, fp) == 1 and redis.call('SCARD', key) == 1 then redis.call('EXPIRE', key, ttl) end
  end
  local count = redis.call('HINCRBY', meta, current .. ':n', #fps)
  if count == #fps then redis.call('EXPIRE', meta, ttl) end
  if count > 2 ^ bits * target * margin and bits < max_bits then
    redis.call('HSET', meta, current, text .. ',' .. math.min(max_bits, bits + growth_bits))
  end
end
"""


def script_past(pairs: list[tuple[int, int]]) -> list[int]:
    """The script's PAST: generation, then the divisor that turns a fingerprint's top 32 bits into its shard."""
    return [number for generation, bits in pairs for number in (generation, 2 ** (32 - bits))]


def shard_ttl_seconds(window_seconds: int, now: float) -> int:
    """A shard written now lives until the window has passed over its generation's end."""
    generation_end = (generation_of(now) + 1) * GENERATION_SECONDS
    return int(generation_end + window_seconds - now) + 1
