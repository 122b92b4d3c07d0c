"""Segment's wire protocol: its messages, checked with Marshmallow and turned into our inbound events.

What ``@segment/analytics-next`` and Segment's server libraries send (the
HTTP Tracking API: ``track``, ``page``, ``screen``, ``identify``, ``group``,
``alias``, alone or in a ``batch``) becomes the same inbound events that
``/collect`` receives from our snippet (``inbound/schema.py``), so enrichment,
routing, mapping, delivery, metrics and the console are written once:

- ``messageId`` is the event id (a client's retry carries the same one, so
  dedupe and the vendors' ids work as for the snippet); one that is not
  8-64 of ``A-Z a-z 0-9 _ -`` is replaced by a digest of itself;
- ``track`` names of Segment's e-commerce spec become Depict types by the
  site's table (``SOURCE_EVENT_TYPES``, overridable per site): ``Product
  Viewed`` a ``page_view`` with its ``product_id``, ``Product Clicked`` with
  a ``recommendation_id`` a ``click``, ``Product Added`` an
  ``add_to_cart``, ``Order Completed`` one ``purchase`` per product; any
  other name stays a Web Event of that name;
- ``page`` is a ``page_view``; ``identify``, ``group``, ``alias`` and
  ``screen`` are Web Events (``SOURCE_CALL_NAMES``) whose Commerce
  ``account`` is the user (with the traits' ``consumer``/``lead`` objects,
  which pass the site's account allowlist like ``/collect``'s) or the group;
- properties named as Depict names them pass through; ``price`` is
  ``entity_price``, ``sku`` or ``id`` stand in for a missing ``product_id``;
- the page (``context.page``), screen width and ``timestamp`` (corrected by
  ``sentAt``, as Segment corrects client clocks) fill in the event.

RudderStack's SDKs speak this protocol too; what differs is in
``rudderstack.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from collections.abc import Mapping
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from collector.config import defaults

CALLS: tuple[str, ...] = ("track", "page", "screen", "identify", "group", "alias")
_ID = re.compile(defaults.EVENT_ID_PATTERN)
_short = validate.Length(max=defaults.MAX_SHORT_STRING_LENGTH)
_long = validate.Length(max=defaults.MAX_STRING_LENGTH)


class Identifier(fields.String):
    """An id as clients send it: a string, or a number (``userId: 42``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return super()._deserialize(value, attr, data, **kwargs)


class PageSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    url = fields.String(validate=_long, allow_none=True)
    referrer = fields.String(validate=_long, allow_none=True)
    path = fields.String(validate=_long, allow_none=True)


class ScreenSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    width = fields.Float(allow_none=True)
    innerWidth = fields.Float(allow_none=True)


class ContextSchema(Schema):
    """The parts of ``context`` we use; the rest (library, locale, campaign...) is not forwarded."""

    class Meta:
        unknown = EXCLUDE

    page = fields.Nested(PageSchema, allow_none=True)
    screen = fields.Nested(ScreenSchema, allow_none=True)
    userAgent = fields.String(allow_none=True)
    ip = fields.String(allow_none=True)
    sessionId = Identifier(validate=_short, allow_none=True)
    consent = fields.Dict(allow_none=True)
    consentManagement = fields.Dict(allow_none=True)


class MessageSchema(Schema):
    """One message of Segment's HTTP Tracking API, as its clients send it."""

    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.OneOf(CALLS))
    messageId = Identifier(validate=validate.Length(min=1, max=defaults.MAX_SHORT_STRING_LENGTH))
    anonymousId = Identifier(validate=_short, allow_none=True)
    userId = Identifier(validate=_short, allow_none=True)
    event = fields.String(validate=validate.Length(min=1, max=defaults.MAX_EVENT_NAME_LENGTH))
    name = fields.String(allow_none=True)
    groupId = Identifier(validate=_short, allow_none=True)
    previousId = Identifier(validate=_short, allow_none=True)
    properties = fields.Dict(allow_none=True)
    traits = fields.Dict(allow_none=True)
    context = fields.Nested(ContextSchema, allow_none=True)
    timestamp = fields.AwareDateTime(default_timezone=UTC, allow_none=True)
    originalTimestamp = fields.AwareDateTime(default_timezone=UTC, allow_none=True)
    sentAt = fields.AwareDateTime(default_timezone=UTC, allow_none=True)

    @validates_schema(skip_on_field_errors=False)  # with many=True, skipping would skip every message after one bad field
    def _call_has_its_fields(self, data: dict[str, Any], **_: Any) -> None:
        if "type" not in data:
            return
        if not (data.get("userId") or data.get("anonymousId")):
            raise ValidationError("every message needs a userId or an anonymousId", "anonymousId")
        needed = {"track": "event", "group": "groupId", "alias": "previousId"}.get(data["type"])
        if needed and not data.get(needed):
            raise ValidationError(f"{data['type']} messages need {needed}", needed)
        if data["type"] == "alias" and not data.get("userId"):
            raise ValidationError("an alias message needs userId", "userId")


_messages = MessageSchema(many=True)


def message_size(message: Any) -> int:
    """Bytes of one message as UTF-8 JSON (a lone surrogate counted as the three bytes it would take)."""
    return len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def load_messages(raw: list[Any]) -> tuple[dict[int, dict[str, Any]], dict[int, Any]]:
    """Loaded messages and errors, each by index: over 32 KB, or not a message of Segment's API."""
    errors: dict[int, Any] = {}
    candidates: list[tuple[int, Any]] = []
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            errors[index] = {"_schema": ["a message must be a JSON object"]}
        elif message_size(message) > defaults.MAX_SOURCE_MESSAGE_BYTES:
            errors[index] = {"_schema": [f"a message may be at most {defaults.MAX_SOURCE_MESSAGE_BYTES // 1024} KB"]}
        else:
            candidates.append((index, message))
    try:
        loaded = _messages.load([message for _, message in candidates])
        failed: dict[int, Any] = {}
    except ValidationError as error:
        loaded, failed = error.valid_data, error.messages  # type: ignore[assignment]
    messages = {}
    for position, (index, _) in enumerate(candidates):
        if position in failed:
            errors[index] = failed[position]
        else:
            messages[index] = loaded[position]
    return messages, errors


def event_id_for(message_id: str | None, message: dict[str, Any]) -> str:
    """The event id: ``messageId`` itself when it is a valid id, else a digest of it (or of the message)."""
    if message_id and _ID.match(message_id):
        return message_id
    source = message_id if message_id else json.dumps(message, sort_keys=True, default=str)
    return "m_" + hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _line_id(event_id: str, line: int) -> str:
    """The id of an order's second and later products: stable, so a resent order dedupes line by line."""
    if line == 0:
        return event_id
    candidate = f"{event_id}_{line}"
    if len(candidate) <= 64:
        return candidate
    return "m_" + hashlib.blake2b(candidate.encode(), digest_size=16).hexdigest()


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def client_time_ms(message: dict[str, Any], received_at: float) -> int | None:
    """When it happened, in ms: ``timestamp`` moved by the client clock's error (``sentAt`` against our receipt)."""
    moment = message.get("timestamp") or message.get("originalTimestamp")
    if moment is None:
        return None
    ts = _ms(moment)
    if message.get("sentAt") is not None:
        ts += int(received_at * 1000) - _ms(message["sentAt"])
    return min(max(ts, 0), defaults.MAX_SAFE_INTEGER)


def _depict_props(properties: dict[str, Any]) -> dict[str, Any]:
    """Properties named as Depict names them, with Segment's own names for a product filled in."""
    props = {name: properties[name] for name in defaults.DEPICT_STRING_PROPS if properties.get(name) is not None}
    for name in (defaults.DEPICT_LIST_PROP, defaults.DEPICT_MAP_PROP):
        if properties.get(name) is not None:
            props[name] = properties[name]
    product_id = properties.get("product_id") or properties.get("sku") or properties.get("id")
    if product_id is not None:
        props.setdefault("product_id", product_id)
    if properties.get("price") is not None:
        props.setdefault("entity_price", properties["price"])
    return props


def _page_fields(message: dict[str, Any]) -> dict[str, Any]:
    context = message.get("context") or {}
    page = context.get("page") or {}
    properties = message.get("properties") or {}
    fields_: dict[str, Any] = {
        "url": page.get("url") or (properties.get("url") if message["type"] == "page" else None),
        "document_referrer": page.get("referrer") or (properties.get("referrer") if message["type"] == "page" else None),
    }
    screen = context.get("screen") or {}
    width = screen.get("innerWidth") or screen.get("width")
    if width is not None and float(width).is_integer() and 0 <= width <= 100_000:
        fields_["document_width"] = int(width)
    return {name: value for name, value in fields_.items() if value is not None}


def _account(message: dict[str, Any]) -> dict[str, Any] | None:
    """The Commerce Account of an identify, group or alias call."""
    call = message["type"]
    if call == "group":
        return {"id": message["groupId"]}
    if call == "alias":
        return {"id": message["userId"], "anonymousIds": [message["previousId"]]}
    if call != "identify" or not message.get("userId"):
        return None
    account: dict[str, Any] = {"id": message["userId"]}
    if message.get("anonymousId"):
        account["anonymousIds"] = [message["anonymousId"]]
    traits = message.get("traits") or {}
    account.update({name: traits[name] for name in ("consumer", "lead") if name in traits})
    return account


def _event_type(message: dict[str, Any], event_types: Mapping[str, str]) -> str:
    if message["type"] != "track":
        return defaults.SOURCE_CALL_NAMES[message["type"]]
    name = message["event"]
    mapped = event_types.get(name)
    if mapped == "click" and not (message.get("properties") or {}).get("recommendation_id"):
        return name  # a click Depict cannot attribute to a recommendation means nothing to it
    return mapped or name


def _order_lines(properties: dict[str, Any]) -> list[dict[str, Any]]:
    """An order's products as Depict props, each with the order's currency; the order itself if it lists none."""
    products = properties.get("products")
    if not isinstance(products, list) or not products:
        return [_depict_props(properties)]
    if len(products) > defaults.MAX_ORDER_PRODUCTS:
        raise ValidationError(f"an order may list at most {defaults.MAX_ORDER_PRODUCTS} products", "properties")
    lines = []
    for product in products:
        line = _depict_props(product if isinstance(product, dict) else {})
        if properties.get("currency") is not None:
            line.setdefault("currency", properties["currency"])
        lines.append(line)
    return lines


def inbound_events(message: dict[str, Any], event_types: Mapping[str, str], received_at: float) -> list[dict[str, Any]]:
    """One message as the inbound events ``/collect`` would have received for it (an order: one per product)."""
    event_type = _event_type(message, event_types)
    properties = message.get("properties") or {}
    context = message.get("context") or {}
    event_id = event_id_for(message.get("messageId"), message)
    base: dict[str, Any] = {"id": event_id, "type": event_type, **_page_fields(message)}
    for name, value in (
        ("ts", client_time_ms(message, received_at)),
        ("anonymous_id", message.get("anonymousId")),
        ("user_id", message.get("userId")),
        ("account_id", message.get("userId")),
        ("session_id", context.get("sessionId")),
    ):
        if value is not None:
            base[name] = value
    account = _account(message)
    if account is not None:
        return [{**base, "props": {"account": account}}]
    if event_type not in defaults.DEPICT_EVENT_TYPES:
        return [{**base, "props": {}}]
    if event_type == "purchase":
        return [{**base, "id": _line_id(event_id, line), "props": props} for line, props in enumerate(_order_lines(properties))]
    return [{**base, "props": _depict_props(properties)}]


def consent_given(message: dict[str, Any]) -> bool:
    """Segment's consent mark: ``context.consent.categoryPreferences`` with some category allowed."""
    preferences = ((message.get("context") or {}).get("consent") or {}).get("categoryPreferences")
    return isinstance(preferences, dict) and any(value is True for value in preferences.values())


def settings_document(write_key: str, api_host: str, protocol: str) -> dict[str, Any]:
    """What analytics-next fetches from ``<cdnURL>/v1/projects/<writeKey>/settings`` when it loads.

    It names this collector as the only destination (``Segment.io`` with
    ``apiHost``), no device-mode integrations, middleware or remote plugins
    to download, and no metrics (which would go to Segment).
    """
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": False,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {"track": {"__default": {"enabled": True, "integrations": {}}}},
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }
