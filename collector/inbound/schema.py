"""The schema of what the snippet sends to ``POST /collect``.

The envelope (``site`` and a list of ``events``) is checked first, as a
whole; each event is then loaded on its own so that one bad event is
reported by index without costing the good ones. The same classes generate
``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from collector.config import defaults
from collector.mapping.commerce_models import AccountSchema

_short = validate.Length(max=defaults.MAX_SHORT_STRING_LENGTH)
_long = validate.Length(max=defaults.MAX_STRING_LENGTH)


class Text(fields.String):
    """A string that also accepts a number (``entity_price: 100`` from a page)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = format(value, "g") if isinstance(value, float) else str(value)
        return super()._deserialize(value, attr, data, **kwargs)


class Width(fields.Integer):
    """``document_width``: a whole number of CSS pixels, sent by browsers as a number or a string."""

    def __init__(self, **kwargs: Any):
        super().__init__(validate=validate.Range(min=0, max=100_000), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return super()._deserialize(value, attr, data, **kwargs)


EventPropsSchema = Schema.from_dict(
    {
        **{
            name: Text(validate=_long if name == "page_url" else _short, allow_none=True)
            for name in defaults.DEPICT_STRING_PROPS
        },
        defaults.DEPICT_LIST_PROP: fields.List(
            fields.String(validate=_short), validate=validate.Length(max=defaults.MAX_VARIANT_IDS), allow_none=True
        ),
        defaults.DEPICT_MAP_PROP: fields.Dict(
            keys=fields.String(validate=_short), values=Text(validate=_short), validate=validate.Length(max=50), allow_none=True
        ),
        "account": fields.Nested(AccountSchema, metadata={"description": "A Commerce Account object, for Web Events"}),
    },
    name="EventProps",
)
"""PROPS of ``collector('track', TYPE, PROPS)``: Depict's field names, and a Commerce account."""


class InboundEventSchema(Schema):
    """One event as the snippet fills it in."""

    id = fields.String(
        required=True,
        validate=validate.Regexp(defaults.EVENT_ID_PATTERN, error="must be 8-64 characters of A-Z a-z 0-9 _ -"),
        metadata={"description": "Random id made by the snippet; the vendors' idempotency key"},
    )
    type = fields.String(
        required=True,
        validate=validate.Length(min=1, max=defaults.MAX_EVENT_NAME_LENGTH),
        metadata={"description": "A Depict event type, or any Web Event name such as 'User Login'"},
    )
    ts = fields.Integer(
        strict=True,
        validate=validate.Range(min=0, max=defaults.MAX_SAFE_INTEGER),
        metadata={"description": "Client time, ms since epoch"},
    )
    anonymous_id = fields.String(validate=_short, allow_none=True)
    session_id = fields.String(validate=_short, allow_none=True)
    user_id = fields.String(validate=_short, allow_none=True)
    account_id = fields.String(validate=_short, allow_none=True)
    url = fields.String(validate=_long, allow_none=True)
    document_referrer = fields.String(validate=_long, allow_none=True)
    document_width = Width(allow_none=True)
    props = fields.Nested(EventPropsSchema, load_default=dict)


class CollectRequestSchema(Schema):
    """The body of ``POST /collect``: one site, a batch of events from one browser."""

    site = fields.String(required=True, validate=validate.Length(min=1, max=defaults.MAX_SITE_NAME_LENGTH))
    consent = fields.Boolean(
        truthy={True},
        falsy={False},
        metadata={"description": "true once the visitor gave consent; a site that requires it drops events without it"},
    )
    events = fields.List(
        fields.Dict(),
        required=True,
        validate=validate.Length(min=1, max=defaults.MAX_EVENTS_PER_BATCH, error="send between {min} and {max} events"),
        metadata={"items": {"$ref": "#/components/schemas/InboundEvent"}},
    )


class RejectedEventSchema(Schema):
    index = fields.Integer()
    id = fields.String(allow_none=True)
    errors = fields.Dict()


class CollectResultSchema(Schema):
    """The answer of ``POST /collect`` when at least one event was queued, or dropped (privacy, a bot)."""

    accepted = fields.Integer()
    duplicates = fields.Integer()
    rejected = fields.List(fields.Nested(RejectedEventSchema))
    dropped_for_privacy = fields.Integer(
        metadata={"description": "Events not queued: consent required and not given, or Global Privacy Control"}
    )
    dropped_as_bot = fields.Integer(
        metadata={"description": "Events not queued: the User-Agent is a known bot's or a headless browser's, and the site drops bots"}
    )


_envelope = CollectRequestSchema()
_events = InboundEventSchema(many=True)


_ENVELOPE_KEYS = frozenset(CollectRequestSchema._declared_fields)


def _plainly_valid(body: dict[str, Any], max_events: int) -> bool:
    """What a real snippet sends, recognised without Marshmallow (a tenth of its time); anything else goes through it."""
    site, events, consent = body.get("site"), body.get("events"), body.get("consent", False)
    return (
        body.keys() <= _ENVELOPE_KEYS
        and type(site) is str
        and 1 <= len(site) <= defaults.MAX_SITE_NAME_LENGTH
        and type(events) is list
        and 1 <= len(events) <= max_events
        and all(type(event) is dict for event in events)
        and consent in (True, False)
        and type(consent) is bool
    )


def load_envelope(body: Any, max_events: int) -> dict[str, Any]:
    """Check the envelope; raise ``ValidationError`` with the reasons."""
    if isinstance(body, dict) and _plainly_valid(body, max_events):
        return body
    envelope = _envelope.load(body) if isinstance(body, dict) else _raise_not_object()
    if len(envelope["events"]) > max_events:
        raise ValidationError({"events": [f"send between 1 and {max_events} events"]})
    return envelope


def _raise_not_object() -> dict[str, Any]:
    raise ValidationError({"_schema": ["the body must be a JSON object with 'site' and 'events'"]})


def load_events(raw_events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a batch into loaded events and rejections (``index``, ``id``, ``errors``).

    The batch is loaded in one call (a third cheaper than one call per
    event); Marshmallow then keys the errors by index and still returns
    every event, so the good ones are kept and the bad ones named.
    """
    try:
        return _events.load(raw_events), []
    except ValidationError as error:
        errors: dict[int, Any] = error.messages  # type: ignore[assignment]
        results: list[dict[str, Any]] = error.valid_data  # type: ignore[assignment]
    loaded = [event for index, event in enumerate(results) if index not in errors]
    rejected = [
        {"index": index, "id": _id_of(raw_events[index]), "errors": errors[index]} for index in sorted(errors)
    ]
    return loaded, rejected


def _id_of(raw: dict[str, Any]) -> str | None:
    return raw["id"] if isinstance(raw.get("id"), str) else None
