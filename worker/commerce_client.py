"""``POST /webevents`` to Drivly Commerce: one ``NewWebEvent`` per request.

Commerce's spec declares no security scheme; its docs say
``Authorization: Bearer <key>`` while its SDK sends ``users API-Key <key>``,
so the scheme is the site's ``auth_scheme`` setting.
"""

from __future__ import annotations

from typing import Any

from collector.config.schema import CommerceDestination
from worker.delivery import VendorClient


class CommerceClient(VendorClient):
    name = "commerce"

    def __init__(self, destination: CommerceDestination):
        super().__init__(destination.url)
        self._authorization = f"{destination.auth_scheme} {destination.api_key}"

    def headers_for(self, delivery: dict[str, Any]) -> dict[str, str]:
        return {"Authorization": self._authorization}
