"""The embedded Redis, and the warnings an operator gets about a Redis that could lose events."""

from __future__ import annotations

import logging
import os

import pytest
from redis import Redis

from collector.cli import main
from collector.storage.redis_server import EmbeddedRedis, durability_warnings


@pytest.fixture
def own_redis():
    """A redis-server of this test's own, so its settings can be changed without touching the shared one."""
    with EmbeddedRedis() as server:
        yield server


def test_the_embedded_redis_persists_refuses_eviction_and_is_stopped_with_its_data(own_redis):
    """The embedded server runs as production should, and stop() ends it and removes its folder."""
    assert durability_warnings(Redis.from_url(own_redis.url)) == []
    pid, folder = own_redis.pid, own_redis.data_dir
    own_redis.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not folder.exists()


def test_a_redis_that_evicts_or_does_not_persist_is_named_at_start(own_redis, config_file, monkeypatch, caplog):
    """Commands that use REDIS_URL warn when the server would evict queued events or lose them on restart."""
    client = Redis.from_url(own_redis.url)
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.config_set("appendonly", "no")
    warnings = durability_warnings(client)
    assert any("maxmemory-policy is allkeys-lru" in warning for warning in warnings)
    assert any("appendonly is off" in warning for warning in warnings)

    monkeypatch.setenv("REDIS_URL", own_redis.url)
    with caplog.at_level(logging.WARNING, logger="collector"):
        assert main(["replay", "--config", str(config_file), "--list"]) == 0
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "noeviction" in logged and "appendonly yes" in logged
