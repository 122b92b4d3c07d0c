"""What a worker process holds for its jobs: the site config, one pooled HTTP client,
a thread pool for concurrent sends, and the Redis-side records.

RQ calls job functions by name with JSON arguments only, so the vendor
clients (and their API keys) are built here, in the worker, from the same
config file the collector reads; they never pass through Redis.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis import Redis

from collector.config import CollectorConfig
from worker.commerce_client import CommerceClient
from worker.dead_letters import DeadLetters
from worker.delivery import Attempt, Outcome, VendorClient, describe_error
from worker.depict_client import DepictClient
from worker.ledger import DeliveryLedger, GroupCommit, ledger_seconds

log = logging.getLogger(__name__)


def api_keys(config: CollectorConfig) -> list[str]:
    """Every vendor key of the configuration, to mask wherever a vendor's answer is kept."""
    destinations = [site.depict for site in config.sites.values()] + [site.commerce for site in config.sites.values()]
    return [destination.api_key for destination in destinations if destination is not None]


def vendor_clients(config: CollectorConfig, http: httpx.Client) -> dict[tuple[str, str], VendorClient]:
    clients: dict[tuple[str, str], VendorClient] = {}
    for site in config.sites.values():
        if site.depict is not None:
            clients[(site.name, "depict")] = DepictClient(site.depict, http)
        if site.commerce is not None:
            clients[(site.name, "commerce")] = CommerceClient(site.commerce, http)
    return clients


def ledger_connection(redis: Redis) -> Redis:
    """A client that keeps one connection of ``redis``'s pool for the ledger's writes.

    A write follows every answer a vendor accepts (``ledger.py``); taking a
    connection from the pool and giving it back cost each about 30 µs of
    redis-py, as much as the round trip itself. Its writes come one at a
    time anyway (one group commit at a time), and redis-py serialises the
    callers of a single-connection client with a lock.
    """
    return Redis(connection_pool=redis.connection_pool, single_connection_client=True)


@dataclass
class WorkerRuntime:
    config: CollectorConfig
    redis: Redis
    http: httpx.Client
    executor: ThreadPoolExecutor
    ledger: DeliveryLedger
    marks: GroupCommit
    clients: dict[tuple[str, str], VendorClient] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    job_key: str = ""  # the running job's ledger (a process runs one job at a time)

    @classmethod
    def start(cls, config: CollectorConfig, redis: Redis, stopping: threading.Event | None = None) -> "WorkerRuntime":
        policy = config.settings.delivery
        http = httpx.Client(
            timeout=httpx.Timeout(policy.timeout_seconds, connect=policy.connect_timeout_seconds),
            limits=httpx.Limits(max_connections=policy.concurrency * 2, max_keepalive_connections=policy.concurrency),
            headers={"User-Agent": "first-party-collector/0.1"},
        )
        executor = ThreadPoolExecutor(max_workers=policy.concurrency, thread_name_prefix="send")
        ledger = DeliveryLedger(ledger_connection(redis), ledger_seconds(policy))
        return cls(
            config, redis, http, executor, ledger, GroupCommit(ledger), vendor_clients(config, http), stopping or threading.Event()
        )

    @property
    def dead_letters(self) -> DeadLetters:
        return DeadLetters(self.redis, secrets=api_keys(self.config))

    def send(self, delivery: dict[str, Any]) -> list[Attempt]:
        """Send one delivery and record at once what the vendor took; send nothing once told to stop.

        Whatever goes wrong in sending one delivery is that delivery's
        outcome, never the job's: an error no one foresaw dead-letters it
        with the error as its reason, and the job's other deliveries go on.
        Only a failure to record a success in Redis fails the job.
        """
        if self.stopping.is_set():
            return [Attempt(delivery, Outcome.UNSENT)]
        client = self.clients.get((delivery["site"], delivery["destination"]))
        if client is None:
            reason = f"site {delivery['site']!r} has no {delivery['destination']} destination in the worker's config"
            return [Attempt(delivery, Outcome.DEAD, answer=reason)]
        try:
            attempts = client.send(delivery)
        except Exception as error:  # classified: a delivery must settle, whatever it holds
            log.exception("%s delivery %s failed unexpectedly; dead-lettered", delivery["destination"], delivery["id"])
            return [Attempt(delivery, Outcome.DEAD, answer=f"unexpected error in sending: {describe_error(error)}")]
        for attempt in attempts:
            if attempt.outcome is Outcome.DELIVERED:
                self.marks.mark_delivered(self.job_key, attempt.delivery)
        return attempts

    def send_all(self, deliveries: list[dict[str, Any]]) -> list[Attempt]:
        """Send concurrently over the pooled client."""
        return [attempt for attempts in self.executor.map(self.send, deliveries) for attempt in attempts]

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.http.close()
        self.ledger.close()


_current: WorkerRuntime | None = None


def install(runtime: WorkerRuntime | None) -> None:
    global _current
    _current = runtime


def current_runtime() -> WorkerRuntime:
    if _current is None:
        raise RuntimeError("no worker runtime: jobs run inside `collector worker`")
    return _current
