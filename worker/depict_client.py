"""``POST /create-events`` to Depict: one array of ``Event`` per request.

The API key goes in ``X-API-KEY``; the visitor's ``Referer``,
``User-Agent``, ``X-Forwarded-For`` and ``X-Forwarded-Host``, taken by the
collector from the browser's request, go along as request headers.

Depict validates a request as a whole: one bad event makes the whole array a
422. So a refused array of several events is split in halves and each half
sent again, down to the single event that is really at fault, which alone
goes to the dead letters while the others are delivered.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from collector.config.schema import DepictDestination
from collector.mapping.routing import depict_delivery_id
from worker.delivery import Attempt, VendorClient

PASSED_ON_HEADERS = ("Referer", "User-Agent", "X-Forwarded-For", "X-Forwarded-Host")
VALIDATION_ERROR = 422


def split_delivery(delivery: dict[str, Any]) -> list[dict[str, Any]]:
    """Two halves of a Depict delivery, each with its own stable id."""
    middle = len(delivery["body"]) // 2
    halves = []
    for body, event_ids in (
        (delivery["body"][:middle], delivery["event_ids"][:middle]),
        (delivery["body"][middle:], delivery["event_ids"][middle:]),
    ):
        halves.append({**delivery, "id": depict_delivery_id(delivery["site"], event_ids), "body": body, "event_ids": event_ids})
    return halves


class DepictClient(VendorClient):
    name = "depict"

    def __init__(self, destination: DepictDestination):
        super().__init__(destination.url)
        self._api_key = destination.api_key

    def headers_for(self, delivery: dict[str, Any]) -> dict[str, str]:
        visitor = delivery.get("headers") or {}
        headers = {name: visitor[name] for name in PASSED_ON_HEADERS if visitor.get(name)}
        headers["X-API-KEY"] = self._api_key
        return headers

    async def send(self, http: aiohttp.ClientSession, delivery: dict[str, Any]) -> list[Attempt]:
        attempt = await self.post(http, delivery)
        if attempt.status == VALIDATION_ERROR and len(delivery["body"]) > 1:
            return [part for half in split_delivery(delivery) for part in await self.send(http, half)]
        return [attempt]
