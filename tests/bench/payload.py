"""What the benchmark sends to ``POST /collect``: realistic 10-event batches with fresh ids.

A batch is what one browser's snippet sends: alternating ``page_view`` and
``add_to_cart`` events with ``product_id``, ``entity_price``, ``currency``,
``url``, ``document_referrer`` and ``document_width``. The collector
deduplicates by event id, so every request needs ids never sent before:
the body is a template with ``%s`` in place of each id (``%`` elsewhere is
escaped), filled by Python (``template % ids``) and by the wrk script
(``string.format(template, ...)``) alike, from a per-run nonce, a
per-connection number and a per-request counter.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from tests.bench.site import ORIGIN, SITE

EVENTS_PER_BATCH = 10
ACCOUNT_ANONYMOUS_IDS = 10
_ID_SLOT = "__EVENT_ID__"
CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
HEADERS = {
    "Content-Type": "text/plain;charset=UTF-8",
    "Origin": ORIGIN,
    "User-Agent": CHROME_UA,
    "Referer": f"{ORIGIN}/p/keyboard",
}


def _event(index: int, event_id: str, ts: int, account: dict[str, Any] | None = None) -> dict[str, Any]:
    product = f"KEY-{index % 7}"
    props: dict[str, Any] = {"product_id": product, "entity_price": "129.90", "currency": "SEK"}
    if account is not None:
        props["account"] = account
    return {
        "id": event_id,
        "type": "add_to_cart" if index % 2 else "page_view",
        "ts": ts,
        "anonymous_id": "a1b2c3d4e5f6g7h8i9j0",
        "session_id": "s1t2u3v4w5x6y7z8a9b0",
        "url": f"{ORIGIN}/p/{product.lower()}?utm_source=newsletter",
        "document_referrer": "https://www.google.com/",
        "document_width": 1280,
        "props": props,
    }


def batch(ids: list[str], account: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request body as a dict, with the given event ids (and, if given, an ``account`` in every event's props)."""
    ts = int(time.time() * 1000)
    return {"site": SITE, "events": [_event(index, event_id, ts, account) for index, event_id in enumerate(ids)]}


def batch_template(size: int = EVENTS_PER_BATCH, account: dict[str, Any] | None = None) -> str:
    """The JSON body with ``%s`` for each event id, for ``template % tuple(ids)``."""
    text = json.dumps(batch([_ID_SLOT] * size, account), separators=(",", ":")).replace("%", "%%")
    return text.replace(_ID_SLOT, "%s")


def commerce_account(anonymous_ids: int = ACCOUNT_ANONYMOUS_IDS) -> dict[str, Any]:
    """An Account that the default ``account_fields`` let through (identifiers only), which makes each
    Commerce Web Event body about 581 bytes, the size the issue's delivery figures were measured with."""
    return {
        "id": "acc_bench0000000000",
        "anonymousIds": [f"anon_{n:02d}_0123456789abcdef0123456789" for n in range(anonymous_ids)],
        "consumer": "con_bench0000000000000000",
        "lead": "lead_bench000000000000000",
    }


def new_nonce() -> str:
    """A prefix that makes this run's event ids differ from every earlier run's."""
    return secrets.token_hex(4)


def event_ids(nonce: str, connection: int, counter: int, size: int = EVENTS_PER_BATCH) -> tuple[str, ...]:
    """The ids of one request: unique per run, connection and request (the wrk script builds the same)."""
    return tuple(f"{nonce}-{connection}-{counter}-{j}" for j in range(1, size + 1))
