"""A batch's events, checked fast when they are well formed and by Marshmallow when they are not.

Marshmallow is the authority on what ``/collect`` accepts (``schema.py``),
but loading 10 events through it costs about a millisecond, a quarter of a
request. Almost every batch a real snippet sends is well formed, so each
batch is first checked against a JSON Schema validator compiled (by
``fastjsonschema``) from the schema ``/openapi.json`` publishes, which
apispec generates from those same Marshmallow classes: about 0.05 ms. Only
a batch that fails it goes through Marshmallow, which then accepts what it
converts (a price sent as a number), names each bad event's reasons, and
keeps the good ones.

The fast check is stricter than Marshmallow, never looser: where Marshmallow
converts a value (``Text`` and ``Width``) or checks more than JSON Schema
can say (a Commerce ``Account`` with its e-mail and date formats), the
compiled schema leaves the case to Marshmallow. ``tests/collector`` holds
both paths to the same answer on every case.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from typing import Any

import fastjsonschema

from collector.inbound.openapi import collect_openapi
from collector.inbound.request_body import lone_surrogate_errors
from collector.inbound.schema import load_events

_EVENT_SCHEMA = "InboundEvent"


def _strict_components() -> dict[str, Any]:
    """The published components, with what only Marshmallow can judge taken out of the fast path."""
    components = copy.deepcopy(collect_openapi()["components"]["schemas"])
    components["EventProps"]["properties"]["account"] = False
    return components


@cache
def _well_formed_batch() -> Callable[[Any], Any]:
    """The compiled validator, made on first use (compiling takes tens of milliseconds)."""
    schema = {
        "type": "array",
        "items": {"$ref": f"#/components/schemas/{_EVENT_SCHEMA}"},
        "components": {"schemas": _strict_components()},
    }
    return fastjsonschema.compile(schema)


def _is_well_formed(raw_events: list[Any]) -> bool:
    try:
        _well_formed_batch()(raw_events)
    except fastjsonschema.JsonSchemaException:
        return False
    return all(_plain_integers(event) for event in raw_events)


def _plain_integers(event: dict[str, Any]) -> bool:
    """JSON Schema calls ``1280.0`` an integer; Marshmallow turns a width into ``1280`` and refuses a ``ts`` of ``1e3``."""
    width, ts = event.get("document_width"), event.get("ts")
    return (width is None or type(width) is int) and (ts is None or type(ts) is int)


def _check(raw_events: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if _is_well_formed(raw_events):
        return [event if "props" in event else {**event, "props": {}} for event in raw_events], []
    return load_events(raw_events)


def check_events(raw_events: list[Any], screen_text: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a batch into events to queue and rejections (``index``, ``id``, ``errors``), as ``load_events`` does.

    With ``screen_text`` (the body had a surrogate escape), events holding a
    string that is not valid Unicode are refused first, naming the field.
    """
    unusable = _lone_surrogates(raw_events) if screen_text else {}
    if not unusable:
        return _check(raw_events)
    kept = [index for index in range(len(raw_events)) if index not in unusable]
    events, rejected = _check([raw_events[index] for index in kept])
    rejected = [{**item, "index": kept[item["index"]]} for item in rejected]
    rejected += [{"index": index, "id": _text_id(raw_events[index]), "errors": errors} for index, errors in unusable.items()]
    return events, sorted(rejected, key=lambda item: item["index"])


def _lone_surrogates(raw_events: list[Any]) -> dict[int, Any]:
    found = {index: lone_surrogate_errors(event) for index, event in enumerate(raw_events)}
    return {index: errors for index, errors in found.items() if errors is not None}


def _text_id(raw: Any) -> str | None:
    event_id = raw.get("id") if isinstance(raw, dict) else None
    return event_id if isinstance(event_id, str) and lone_surrogate_errors(event_id) is None else None
