"""Inbound events -> Depict ``Event`` objects for ``POST /create-events``.

The schema below is Depict's ``Event`` (``additionalProperties: false``):
every field it dumps is one the spec declares, and absent values are left
out rather than sent as null. It is dumped from a small source object that
joins the inbound event, the site's tenant and market, and the visitor.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, post_dump

from collector import defaults
from collector.config import DepictDestination
from collector.enrich import RequestContext


def _prop(name: str) -> fields.String:
    return fields.String(attribute=f"event.props.{name}")


class _DepictEventFields(Schema):
    """The fields of Depict's ``Event`` that are not PROPS passed through."""

    tenant = fields.String(required=True)
    market = fields.String(required=True)
    type = fields.String(required=True, attribute="event.type")
    deduplication_id = fields.String(attribute="event.id")
    user_id = fields.String()
    session_id = fields.String(attribute="event.session_id")
    url = fields.String(attribute="event.url")
    document_referrer = fields.String(attribute="event.document_referrer")
    document_width = fields.String(attribute="event.document_width")
    page_url = fields.String()
    variant_ids = fields.List(fields.String(), attribute=f"event.props.{defaults.DEPICT_LIST_PROP}")
    entity_identifiers = fields.Dict(
        keys=fields.String(), values=fields.String(), attribute=f"event.props.{defaults.DEPICT_MAP_PROP}"
    )

    @post_dump
    def _drop_absent(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {key: value for key, value in data.items() if value is not None}


DepictEventSchema = _DepictEventFields.from_dict(
    {name: _prop(name) for name in defaults.DEPICT_STRING_PROPS if name != "page_url"},
    name="DepictEvent",
)
"""Depict's ``Event``, as ``depict-create-events.openapi.yaml`` defines it."""

_schema = DepictEventSchema()


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
        "event": event,
        "tenant": destination.tenant,
        "market": destination.market,
        "user_id": depict_user_id(event, context),
        "page_url": page_url_of(event),
    }
    return _schema.dump(source)
