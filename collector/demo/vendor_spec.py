"""Checks request bodies against a vendor's published OpenAPI document.

Used by the demo destinations of ``collector dev`` and by the test stand-ins,
so that what we would send is judged by the vendor's own contract rather than
by our Marshmallow schemas (which could share our mistakes).

OpenAPI 3.1 schemas are JSON Schema 2020-12. Two defects of the Commerce
document are mended when it is loaded, each for a stated reason:

- its component schemas carry relative ``$id`` values ("NewWebEvent",
  "Account", ...) that would re-base every ``#/components/...`` reference
  inside them; they are titles in practice, so they are dropped;
- ``Address.city`` is ``oneOf`` an inline object and ``City``, two schemas of
  the same shape, so every city matches both and ``oneOf`` can never pass:
  no Address with a city would ever be valid. It is read as ``anyOf``
  (either shape), which is what the document plainly means.
  ``tests/collector/demo/test_vendor_spec.py`` checks the defect is still in the
  shipped document, so the mend goes when the vendor fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_DIR = Path(__file__).parent / "specs"
DEPICT_SPEC = SPEC_DIR / "depict-create-events.openapi.yaml"
COMMERCE_SPEC = SPEC_DIR / "commerce-webevents.openapi.yaml"

_ROOT_URI = "urn:vendor-spec"


def _without_ids(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _without_ids(value) for key, value in node.items() if key != "$id"}
    if isinstance(node, list):
        return [_without_ids(item) for item in node]
    return node


def address_city(document: dict[str, Any]) -> dict[str, Any] | None:
    return document.get("components", {}).get("schemas", {}).get("Address", {}).get("properties", {}).get("city")


def _with_city_as_any_of(document: dict[str, Any]) -> dict[str, Any]:
    city = address_city(document)
    if city is not None and "oneOf" in city:
        city["anyOf"] = city.pop("oneOf")
    return document


@dataclass(frozen=True)
class VendorSpec:
    """One vendor's OpenAPI document, ready to validate request bodies."""

    document: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> "VendorSpec":
        with open(path, encoding="utf-8") as handle:
            return cls(_with_city_as_any_of(_without_ids(yaml.safe_load(handle))))

    def request_schema(self, path: str, method: str = "post") -> dict[str, Any]:
        operation = self.document["paths"][path][method]
        return operation["requestBody"]["content"]["application/json"]["schema"]

    def body_errors(self, path: str, body: Any, method: str = "post") -> list[str]:
        """Every way ``body`` breaks the request schema of ``method path``, as readable lines."""
        return self.errors_against(self.request_schema(path, method), body)

    def component_errors(self, name: str, instance: Any) -> list[str]:
        """Every way ``instance`` breaks ``#/components/schemas/<name>``."""
        return self.errors_against({"$ref": f"{_ROOT_URI}#/components/schemas/{name}"}, instance)

    def errors_against(self, schema: dict[str, Any], instance: Any) -> list[str]:
        resource = Resource(contents=self.document, specification=DRAFT202012)
        registry = Registry().with_resource(_ROOT_URI, resource)
        rooted = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": _ROOT_URI + "/request", **schema}
        rooted = _rebase_refs(rooted)
        validator = Draft202012Validator(
            rooted, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        return [
            f"{'/'.join(str(part) for part in error.absolute_path) or '<body>'}: {error.message}"
            for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
        ]


def _rebase_refs(node: Any) -> Any:
    """Point local ``#/...`` references of an extracted schema at the whole document."""
    if isinstance(node, dict):
        return {
            key: (_ROOT_URI + value if key == "$ref" and isinstance(value, str) and value.startswith("#") else _rebase_refs(value))
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rebase_refs(item) for item in node]
    return node
