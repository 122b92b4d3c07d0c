"""What RudderStack's SDKs do differently from Segment's: auth, the beacon path, the source config, consent.

RudderStack's JavaScript SDK (``@rudderstack/analytics-js``) and server
libraries send Segment's messages (``segment.py``) to the same ``/v1/...``
paths, with these differences:

- the write key is always the user of HTTP Basic auth, and the browser SDK
  adds an ``AnonymousId`` header (so its requests are preflighted);
- a page being left sends with ``navigator.sendBeacon`` to
  ``/beacon/v1/batch?writeKey=...`` (no headers can be set there);
- at load, the SDK fetches its *source config* from ``configUrl``
  (``GET /sourceConfig/?writeKey=...``): :func:`source_config` answers it
  with no device-mode destinations and the SDK's error reports and metrics
  off, so the page sends nothing to RudderStack;
- consent is ``context.consentManagement.allowedConsentIds``;
- an identify's traits are in ``context.traits``, an anonymous visitor's
  ``userId`` is ``""``, and "no referrer" is the word ``$direct``
  (:func:`as_segment_message` turns these into Segment's forms).
"""

from __future__ import annotations

import hashlib
from typing import Any

BEACON_PATH = "/beacon/v1/batch"
NO_REFERRER = "$direct"


def _stable_id(prefix: str, text: str) -> str:
    return prefix + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def source_config(site_name: str, write_key: str) -> dict[str, Any]:
    """The source config the JS SDK loads: enabled, no destinations, nothing reported to RudderStack."""
    return {
        "isHosted": False,
        "source": {
            "id": _stable_id("src_", write_key),
            "name": site_name,
            "writeKey": write_key,
            "enabled": True,
            "workspaceId": _stable_id("wsp_", site_name),
            "config": {
                "statsCollection": {
                    "errors": {"enabled": False},
                    "metrics": {"enabled": False},
                },
            },
            "destinations": [],
        },
    }


def consent_given(message: dict[str, Any]) -> bool:
    """RudderStack's consent mark: some consent category allowed in ``context.consentManagement``."""
    allowed = ((message.get("context") or {}).get("consentManagement") or {}).get("allowedConsentIds")
    return isinstance(allowed, (list, dict)) and len(allowed) > 0


def _without_no_referrer(fields: Any) -> Any:
    if isinstance(fields, dict) and fields.get("referrer") == NO_REFERRER:
        return {**fields, "referrer": None}
    return fields


def as_segment_message(message: Any) -> Any:
    """A RudderStack message in Segment's forms; a Segment message (or anything else) as it is."""
    if not isinstance(message, dict):
        return message
    message = dict(message)
    context = message.get("context")
    if isinstance(context, dict):
        if "traits" not in message and isinstance(context.get("traits"), dict) and context["traits"]:
            message["traits"] = context["traits"]
        if isinstance(context.get("page"), dict):
            message["context"] = {**context, "page": _without_no_referrer(context["page"])}
    if message.get("userId") == "":
        del message["userId"]
    if "properties" in message:
        message["properties"] = _without_no_referrer(message["properties"])
    return message
