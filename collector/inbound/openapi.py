"""``GET /openapi.json``: the schema of ``/collect``, generated from the Marshmallow schemas
that validate it (``collector/inbound/schema.py``), so the document cannot drift from the code."""

from __future__ import annotations

from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, current_app, jsonify
from marshmallow import fields

from collector.config import defaults
from collector.inbound.paths import configured_paths
from collector.inbound.schema import CollectRequestSchema, CollectResultSchema, EventPropsSchema, InboundEventSchema

bp = Blueprint("openapi", __name__)

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "details": {}},
            "required": ["code", "message"],
        }
    },
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def object_sizes(_converter: Any, field: fields.Field, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """apispec writes a ``Length`` on a ``Dict`` as ``maxLength``, which JSON Schema ignores on objects."""
    if not isinstance(field, fields.Dict):
        return {}
    return {f"{bound}Properties": ret.pop(f"{bound}Length") for bound in ("min", "max") if f"{bound}Length" in ret}


@cache
def collect_openapi(collect_path: str = defaults.DEFAULT_COLLECT_PATH) -> dict[str, Any]:
    """The document for ``/collect`` served at ``collect_path`` (``[collector.paths] collect``)."""
    marshmallow = MarshmallowPlugin()
    spec = APISpec(
        title="First-party collector",
        version="1.0.0",
        openapi_version="3.1.0",
        plugins=[marshmallow],
        info={"description": "What the snippet sends to the collector."},
    )
    assert marshmallow.converter is not None
    marshmallow.converter.add_attribute_function(object_sizes)
    spec.components.schema("Error", _ERROR)
    spec.components.schema("EventProps", schema=EventPropsSchema)
    spec.components.schema("InboundEvent", schema=InboundEventSchema)
    spec.components.schema("CollectRequest", schema=CollectRequestSchema)
    spec.components.schema("CollectResult", schema=CollectResultSchema)
    body = {"schema": {"$ref": "#/components/schemas/CollectRequest"}}
    spec.path(
        path=collect_path,
        operations={
            "post": {
                "summary": "Queue a batch of events from one browser",
                "requestBody": {"required": True, "content": {"application/json": body, "text/plain": body}},
                "responses": {
                    "202": {
                        "description": "At least one event was queued, or dropped for privacy or as a bot's",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CollectResult"}}},
                    },
                    "400": _error_response("The request is not a usable batch, or the site is unknown"),
                    "403": _error_response("The page's origin is not one of the site's origins"),
                    "413": _error_response("The body is larger than the limit"),
                    "422": _error_response("No event of the batch was valid"),
                    "429": _error_response("Too many requests from this address"),
                    "503": _error_response("The events could not be queued; retry after Retry-After seconds"),
                },
            }
        },
    )
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(collect_openapi(configured_paths(current_app).collect))
