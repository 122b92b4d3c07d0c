"""Inbound events -> Depict ``Event`` objects for ``POST /create-events``.

The schema below is Depict's ``Event`` (``additionalProperties: false``):
every field it dumps is one the spec declares, and absent values are left
out rather than sent as null. It is dumped from a flat source already keyed
by Depict's names (PROPS as sent, plus the event's own fields renamed, the
site's tenant and market, and the visitor), because Marshmallow walks a
dotted ``attribute`` path key by key for every field of every event, and
only over the fields the source has (``present.py``).
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields

from collector.config import defaults
from collector.config.schema import DepictDestination
from collector.inbound.enrich import RequestContext
from collector.mapping.present import PresentString, present_fields_dumper


class _DepictEventFields(Schema):
    """The fields of Depict's ``Event`` that are not PROPS passed through."""

    tenant = PresentString(required=True)
    market = PresentString(required=True)
    type = PresentString(required=True)
    deduplication_id = PresentString()
    user_id = PresentString()
    session_id = PresentString()
    url = PresentString()
    document_referrer = PresentString()
    document_width = PresentString()
    page_url = PresentString()


DepictEventSchema = _DepictEventFields.from_dict(
    {
        **{name: PresentString() for name in defaults.DEPICT_STRING_PROPS if name != "page_url"},
        defaults.DEPICT_LIST_PROP: fields.List(fields.String()),
        defaults.DEPICT_MAP_PROP: fields.Dict(keys=fields.String(), values=fields.String()),
    },
    name="DepictEvent",
)
"""Depict's ``Event``, as ``depict-create-events.openapi.yaml`` defines it."""

_dump = present_fields_dumper(DepictEventSchema)


def depict_user_id(event: dict[str, Any], context: RequestContext) -> str:
    """The identified customer when known, otherwise the visitor's first-party id."""
    return event.get("user_id") or context.visitor_id


def page_url_of(event: dict[str, Any]) -> str | None:
    """The product page visited: given in PROPS, or the URL of a product page view."""
    props = event.get("props") or {}
    if props.get("page_url"):
        return props["page_url"]
    if event["type"] == "page_view" and props.get("product_id"):
        return event.get("url")
    return None


def to_depict_event(event: dict[str, Any], destination: DepictDestination, context: RequestContext) -> dict[str, Any]:
    source = {
        **(event.get("props") or {}),
        "tenant": destination.tenant,
        "market": destination.market,
        "type": event["type"],
        "deduplication_id": event["id"],
        "user_id": depict_user_id(event, context),
        "session_id": event.get("session_id"),
        "url": event.get("url"),
        "document_referrer": event.get("document_referrer"),
        "document_width": event.get("document_width"),
        "page_url": page_url_of(event),
    }
    return _dump(source)
