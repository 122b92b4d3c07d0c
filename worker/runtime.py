"""What a worker process holds for its jobs: the site config, the sender (an event loop with its HTTP
connections and throttles), and the Redis-side records.

RQ calls job functions by name with JSON arguments only, so the vendor
clients and their API keys live here, built once per process from the same
config file the collector reads; they never pass through Redis.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from collector.config.schema import CollectorConfig
from worker.commerce_client import CommerceClient
from worker.dead_letters import DeadLetters
from worker.delivery import Attempt, VendorClient
from worker.depict_client import DepictClient
from worker.ledger import DeliveryLedger, ledger_seconds
from worker.sender import Sender


def api_keys(config: CollectorConfig) -> list[str]:
    """Every vendor key of the configuration, to mask wherever a vendor's answer is kept."""
    destinations = [site.depict for site in config.sites.values()] + [site.commerce for site in config.sites.values()]
    return [destination.api_key for destination in destinations if destination is not None]


def vendor_clients(config: CollectorConfig) -> dict[tuple[str, str], VendorClient]:
    clients: dict[tuple[str, str], VendorClient] = {}
    for site in config.sites.values():
        if site.depict is not None:
            clients[(site.name, "depict")] = DepictClient(site.depict)
        if site.commerce is not None:
            clients[(site.name, "commerce")] = CommerceClient(site.commerce)
    return clients


def ledger_connection(redis: Redis) -> Redis:
    """A client that keeps one connection of ``redis``'s pool for the ledger's writes.

    A write follows every answer a vendor accepts (``ledger.py``); taking a
    connection from the pool and giving it back cost each about 30 µs of
    redis-py, as much as the round trip itself. Its writes come one at a
    time anyway (one group commit at a time).
    """
    return Redis(connection_pool=redis.connection_pool, single_connection_client=True)


@dataclass
class WorkerRuntime:
    config: CollectorConfig
    redis: Redis
    ledger: DeliveryLedger
    sender: Sender
    stopping: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, config: CollectorConfig, redis: Redis, stopping: threading.Event | None = None) -> "WorkerRuntime":
        stopping = stopping or threading.Event()
        ledger = DeliveryLedger(ledger_connection(redis), ledger_seconds(config.settings.delivery))
        sender = Sender(vendor_clients(config), config.settings.delivery, ledger, stopping)
        return cls(config, redis, ledger, sender, stopping)

    @property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.redis, secrets=api_keys(self.config))

    def send_all(self, job_key: str, deliveries: list[dict[str, Any]], deadline: float) -> list[Attempt]:
        """Send concurrently; see :meth:`worker.sender.Sender.send_all`."""
        return self.sender.send_all(job_key, deliveries, deadline)

    def close(self) -> None:
        self.sender.close()
        self.ledger.close()


_current: WorkerRuntime | None = None


def install(runtime: WorkerRuntime | None) -> None:
    global _current
    _current = runtime


def current_runtime() -> WorkerRuntime:
    if _current is None:
        raise RuntimeError("no worker runtime: jobs run inside `collector worker`")
    return _current
