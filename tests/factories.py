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
