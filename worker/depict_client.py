"""``POST /create-events`` to Depict: one array of ``Event`` per request.

The API key goes in ``X-API-KEY``; the visitor's ``Referer``,
``User-Agent``, ``X-Forwarded-For`` and ``X-Forwarded-Host``, taken by the
collector from the browser's request, go along as request headers.
"""

from __future__ import annotations

from typing import Any

import httpx

from collector.config import DepictDestination
from worker.delivery import VendorClient

PASSED_ON_HEADERS = ("Referer", "User-Agent", "X-Forwarded-For", "X-Forwarded-Host")


class DepictClient(VendorClient):
    name = "depict"

    def __init__(self, destination: DepictDestination, http: httpx.Client):
        super().__init__(destination.url, http)
        self._api_key = destination.api_key

    def headers_for(self, delivery: dict[str, Any]) -> dict[str, str]:
        visitor = delivery.get("headers") or {}
        headers = {name: visitor[name] for name in PASSED_ON_HEADERS if visitor.get(name)}
        headers["X-API-KEY"] = self._api_key
        return headers
