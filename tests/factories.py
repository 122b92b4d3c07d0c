"""Events as the snippet sends them, for tests."""

from __future__ import annotations

import secrets
import time


def new_event_id() -> str:
    return secrets.token_hex(8)


def make_event(event_type: str = "page_view", **fields) -> dict:
    """An event as the snippet sends it, with a fresh id."""
    event = {
        "id": new_event_id(),
        "type": event_type,
        "ts": int(time.time() * 1000),
        "anonymous_id": "anon1234abcd",
        "session_id": "sess5678",
        "url": "https://shop.example/p/keyboard",
        "document_referrer": "https://www.google.com/",
        "document_width": 1280,
    }
    event.update(fields)
    return event


def make_delivery(site: str, destination: str, number: int) -> dict:
    """A delivery as the outbox and the dead letters hold it, numbered for tests."""
    return {
        "id": f"{destination}-{site}-{number}",
        "site": site,
        "destination": destination,
        "headers": {},
        "body": {"id": f"wev_{number:012d}", "name": "User Login"},
        "event_ids": [f"event{number:08d}"],
        "queued_at": 0,
    }


def make_segment_message(call: str = "track", **fields) -> dict:
    """A message as Segment's analytics-next sends it (``messageId`` fresh), for the ``/v1/...`` endpoints."""
    message = {
        "type": call,
        "messageId": "ajs-next-" + secrets.token_hex(16),
        "anonymousId": "1b7c0b4e-8a1e-4e9a-9e52-6a4c3f1f0f11",
        "context": {
            "page": {"url": "https://shop.example/p/keyboard", "referrer": "https://www.google.com/", "path": "/p/keyboard"},
            "userAgent": "Mozilla/5.0 (what the page says)",
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    }
    message.update(fields)
    return message
