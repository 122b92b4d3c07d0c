"""Deliveries -> the site's outboxes in Redis, deduplicated, in one round trip.

A *delivery* is one HTTP request we owe a vendor: a Depict array of the
batch's events, or one Commerce Web Event. An *outbox entry* holds the
deliveries of one ``/collect`` request for one destination, as
zlib-compressed JSON (:func:`encode_entry`): the vendors' field names repeat
in every event, so an entry takes about a sixth of its JSON, and a queued
event costs about 200 bytes of Redis in all. ``/collect`` hands the
deliveries to :meth:`Outbox.try_enqueue`, which runs one Lua script that

1. looks up each of the batch's event ids among those the site accepted
   within the dedupe window (53-bit fingerprints in compact integer sets,
   ``collector/storage/dedupe.py``); if any was, it writes nothing and names them,
   and the caller retries without them; otherwise it
2. remembers the ids, appends one entry to each outbox list (one per site
   and destination), and wakes a dispatcher.

Before anything, it checks the site's budgets (events per minute per site
and per visitor, :class:`Budget`); a batch that would pass one is refused
whole, and a batch that is queued is charged to each.

A script runs atomically, so an acknowledged event is both marked and
queued, or neither. The worker's dispatcher moves outbox entries into RQ
jobs (see ``worker/dispatch.py``).
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis import Redis
from redis.exceptions import NoScriptError

from collector.config.defaults import REDIS_KEY_PREFIX as KEY_PREFIX
from collector.storage import dedupe

OUTBOX_REGISTRY = KEY_PREFIX + "outboxes"
WAKE_LIST = KEY_PREFIX + "wake"
ENTRY_COMPRESSION_LEVEL = 1  # level 6 saves 4% more bytes for 40% more time


def outbox_key(site: str, destination: str) -> str:
    return f"{KEY_PREFIX}outbox:{site}:{destination}"


@dataclass(frozen=True)
class Delivery:
    """One request owed to a vendor. ``id`` is stable across retries and replays."""

    id: str
    site: str
    destination: str
    body: Any
    event_ids: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)

    def as_dict(self, queued_at: float) -> dict[str, Any]:
        """The JSON-safe form that travels through the outbox, RQ jobs and the dead letters."""
        return {
            "id": self.id,
            "site": self.site,
            "destination": self.destination,
            "headers": self.headers,
            "body": self.body,
            "event_ids": list(self.event_ids),
            "queued_at": queued_at,
        }


def encode_entry(deliveries: Iterable[dict[str, Any]]) -> bytes:
    """An outbox entry: deliveries of one site and destination, as compressed JSON."""
    items = list(deliveries)
    try:
        text = orjson.dumps(items)  # a sixth of json.dumps' time
    except TypeError:  # an integer beyond 64 bits (a page may send one in an Account): json writes it exactly
        text = json.dumps(items, separators=(",", ":")).encode()
    return zlib.compress(text, ENTRY_COMPRESSION_LEVEL)


def decode_entry(raw: bytes) -> list[dict[str, Any]]:
    return json.loads(zlib.decompress(raw))


# ARGV: 1 the header numbers, 2 the shard prefix, 3 the past layouts, 4 the fingerprints, 5 the
# budgets' (limit, seconds), each a space-separated list (packing one argument per number cost a
# /collect request 50 us); then one outbox entry per outbox key, in KEYS' order; then the tail, if kept.
_ENQUEUE_SCRIPT_TEMPLATE = """
local function numbers(text)
  local list = {{}}
  for word in string.gmatch(text, '%S+') do list[#list + 1] = tonumber(word) end
  return list
end
local head = numbers(ARGV[1])
local outbox_count, budget_count, tail_kept, ttl, current = head[1], head[2], head[3], head[4], head[5]
local span, target, margin, max_bits, first_bits, growth_bits = {span}, {target}, {margin}, {max_bits}, {first_bits}, {growth_bits}
local prefix = ARGV[2]
local past = numbers(ARGV[3])
local fps = {{}}
for word in string.gmatch(ARGV[4], '%S+') do fps[#fps + 1] = word end
local fp_count = #fps
local limits = numbers(ARGV[5])
local registry, wake, meta = KEYS[outbox_count + 1], KEYS[outbox_count + 2], KEYS[outbox_count + 3]
local budgets = outbox_count + 3
for j = 1, budget_count do
  local used = tonumber(redis.call('GET', KEYS[budgets + j]) or '0')
  if used + fp_count > limits[2 * j - 1] then
    return {{-j}}
  end
end
local layouts, layout_text = current_layouts(meta, current, span, target, margin, max_bits, first_bits)
local tops = {{}}
for i, fp in ipairs(fps) do tops[i] = top_bits(fp) end
local duplicates = already_seen(prefix, current, layouts, past, fps, tops)
if #duplicates > 0 then
  return duplicates
end
remember(prefix, meta, current, layouts, layout_text, fps, tops, ttl, target, margin, max_bits, growth_bits)
for j = 1, budget_count do
  if redis.call('INCRBY', KEYS[budgets + j], fp_count) == fp_count then
    redis.call('EXPIRE', KEYS[budgets + j], limits[2 * j])
  end
end
if tail_kept > 0 then
  local tail = KEYS[budgets + budget_count + 1]
  redis.call('LPUSH', tail, ARGV[5 + outbox_count + 1])
  redis.call('LTRIM', tail, 0, tail_kept - 1)
end
for i = 1, outbox_count do
  redis.call('RPUSH', KEYS[i], ARGV[5 + i])
  redis.call('SADD', registry, KEYS[i])
end
redis.call('LPUSH', wake, '1')
redis.call('LTRIM', wake, 0, 0)
return duplicates
"""


def enqueue_script(window_seconds: int) -> str:
    """The enqueue script with the dedupe's constants written into its source (fewer arguments to pack per call)."""
    return dedupe.LUA_FUNCTIONS + _ENQUEUE_SCRIPT_TEMPLATE.format(
        span=dedupe.generations_in_window(window_seconds),
        target=dedupe.TARGET_PER_SHARD,
        margin=dedupe.GROWTH_MARGIN,
        max_bits=dedupe.MAX_SHARD_BITS,
        first_bits=dedupe.FIRST_SHARD_BITS,
        growth_bits=dedupe.GROWTH_BITS,
    )


@dataclass(frozen=True)
class TailEntry:
    """What the console's live tail shows of an accepted batch: pushed to ``key``, which keeps the last ``kept``."""

    key: str
    text: str
    kept: int


@dataclass(frozen=True)
class Budget:
    """At most ``limit`` events until ``resets_at``, counted in the Redis key ``key`` (which outlives the window a little)."""

    key: str
    limit: int
    resets_at: float
    scope: str = ""  # what it limits, as the refusal says it: "per visitor", "for the whole site"

    @property
    def key_seconds(self) -> int:
        return int(self.resets_at - time.time()) + 60


class OverBudget(Exception):
    """A batch would take a budget past its limit; nothing was written."""

    def __init__(self, budget: Budget):
        super().__init__(f"over the budget {budget.key}")
        self.budget = budget

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.budget.resets_at - time.time()))


def minute_budget(name: str, limit: int, scope: str = "", now: float | None = None) -> Budget:
    """A budget of ``limit`` events in the current clock minute, named ``name``."""
    minute = int((time.time() if now is None else now) // 60)
    return Budget(f"{KEY_PREFIX}budget:{name}:{minute}", limit, (minute + 1) * 60.0, scope)


class Outbox:
    """The write side of the outboxes, bound to one Redis connection."""

    def __init__(self, redis: Redis, dedupe_window_seconds: int):
        self._redis = redis
        self._window = dedupe_window_seconds
        self._script = redis.register_script(enqueue_script(dedupe_window_seconds))
        self._shards = dedupe.GenerationShards(redis, dedupe_window_seconds)

    def try_enqueue(
        self,
        site: str,
        event_ids: Sequence[str],
        deliveries: Sequence[Delivery],
        budgets: Sequence[Budget] = (),
        tail: TailEntry | None = None,
        now: float | None = None,
    ) -> list[str]:
        """Queue all or nothing. Returns the event ids already seen (then nothing was written).

        Every budget is charged the batch's events, or, if one would pass its
        limit, :class:`OverBudget` is raised and nothing is written. A queued
        batch also adds ``tail`` to the console's live tail.
        """
        queued_at = time.time() if now is None else now
        by_outbox: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for delivery in deliveries:
            by_outbox[outbox_key(delivery.site, delivery.destination)].append(delivery.as_dict(queued_at))
        outboxes = list(by_outbox)
        header = [len(outboxes), len(budgets), tail.kept if tail else 0]
        header += [dedupe.shard_ttl_seconds(self._window, queued_at), dedupe.generation_of(queued_at)]
        past = dedupe.script_past(self._shards.past(site, queued_at))
        fingerprints = [dedupe.fingerprint(site, event_id) for event_id in event_ids]
        limits = [number for budget in budgets for number in (budget.limit, budget.key_seconds)]
        args: list[Any] = [_spaced(header), dedupe.shard_prefix(site), _spaced(past), _spaced(fingerprints), _spaced(limits)]
        args += [encode_entry(by_outbox[outbox]) for outbox in outboxes]
        keys = [*outboxes, OUTBOX_REGISTRY, WAKE_LIST, dedupe.meta_key(site), *(budget.key for budget in budgets)]
        if tail is not None:
            keys.append(tail.key)
            args.append(tail.text)
        answer = self._run(keys, args)
        if answer and int(answer[0]) < 0:
            raise OverBudget(budgets[-int(answer[0]) - 1])
        return [event_ids[int(index)] for index in answer]


    def _run(self, keys: list[str], args: list[Any]) -> Any:
        """``EVALSHA`` straight through the client (redis-py's ``Script`` object costs a call 15 us more); loaded when Redis lacks it."""
        try:
            return self._redis.execute_command("EVALSHA", self._script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return self._script(keys=keys, args=args)


def _spaced(numbers: Iterable[int]) -> str:
    return " ".join(map(str, numbers))


def wake_dispatchers(redis: Redis) -> None:
    """Tell a waiting dispatcher there is work (one pending wake-up is enough)."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.lpush(WAKE_LIST, "1")
        pipe.ltrim(WAKE_LIST, 0, 0)
        pipe.execute()


def pending_entries(redis: Redis) -> dict[str, int]:
    """How many entries (one per /collect request) wait in each outbox, for /metrics."""
    keys = sorted(key.decode() if isinstance(key, bytes) else key for key in redis.smembers(OUTBOX_REGISTRY))
    if not keys:
        return {}
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    return dict(zip(keys, pipe.execute()))
