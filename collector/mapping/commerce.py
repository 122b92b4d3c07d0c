"""Inbound events -> Drivly Commerce ``NewWebEvent`` objects for ``POST /webevents``.

Every event routed to Commerce becomes one Web Event: its ``name`` is the
event type (``add_to_cart``, ``User Login``), ``anonymousId`` the visitor's
first-party id, ``account`` the identified account (an id, or the Account
object a page sent in PROPS), and ``id`` is derived from the snippet's event
id so that a retried or replayed delivery carries the same id.
"""

from __future__ import annotations

import hashlib
from typing import Any

from marshmallow import Schema

from collector.config.defaults import COMMERCE_ID_LENGTH, COMMERCE_ID_PREFIX
from collector.inbound.enrich import RequestContext
from collector.mapping.commerce_models import AccountSchema, IdOr
from collector.mapping.present import PresentString, present_fields_dumper

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def web_event_id(site: str, event_id: str) -> str:
    """``wev_`` + 12 lowercase alphanumerics, the same for the same site and event id."""
    number = int.from_bytes(hashlib.sha256(f"{site}:{event_id}".encode()).digest()[:10], "big")
    digits = []
    for _ in range(COMMERCE_ID_LENGTH):
        number, digit = divmod(number, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return COMMERCE_ID_PREFIX + "".join(digits)


class NewWebEventSchema(Schema):
    """Commerce's ``NewWebEvent``, as ``commerce-webevents.openapi.yaml`` defines it."""

    id = PresentString()
    name = PresentString(required=True)
    anonymousId = PresentString()
    account = IdOr(AccountSchema)


_dump = present_fields_dumper(NewWebEventSchema)


def account_of(event: dict[str, Any]) -> str | dict[str, Any] | None:
    """The Account object sent in PROPS, else the id given to ``identify``, else nothing."""
    return (event.get("props") or {}).get("account") or event.get("account_id")


def to_web_event(site: str, event: dict[str, Any], context: RequestContext) -> dict[str, Any]:
    return _dump(
        {
            "id": web_event_id(site, event["id"]),
            "name": event["type"],
            "anonymousId": context.visitor_id,
            "account": account_of(event),
        }
    )
