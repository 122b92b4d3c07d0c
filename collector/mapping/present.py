"""Dump a vendor schema over only the fields an event has.

Marshmallow's ``dump`` visits every declared field, present or not: Depict's
``Event`` declares 24 and a typical event fills 13, so most of the work of
mapping a batch went into looking up absent keys. A schema restricted with
``only`` to the keys a source holds dumps the same JSON for it; one such
instance is kept per set of keys (events of one type share a handful of
shapes) and reused. At most :data:`SHAPES_KEPT` are kept per schema, about
12 KB each, so a page sending ever new combinations of PROPS costs at most
about 1.5 MB per vendor schema and process, and a schema built per request.

The vendors' string fields are :class:`PresentString`: a source dumped this
way holds only present, already checked values, so such a field needs none
of Marshmallow's general lookup (attribute paths, missing values, defaults)
and costs a quarter of a ``fields.String`` (3 against 12 µs for an event
of 14 strings).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from marshmallow import Schema, fields

SHAPES_KEPT = 128  # distinct key sets per schema; a set costs one schema instance


class PresentString(fields.String):
    """A string field of a schema dumped by :func:`present_fields_dumper`: the value as it is, a number as text."""

    def serialize(self, attr: str, obj: Any, accessor: Any = None, **kwargs: Any) -> str:
        value = obj[attr]
        return value if type(value) is str else str(value)


def present_fields_dumper(schema_class: type[Schema]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A function that dumps a source through ``schema_class``, leaving out its absent and null fields."""
    declared = frozenset(schema_class._declared_fields)

    @lru_cache(maxsize=SHAPES_KEPT)
    def schema_for(keys: frozenset[str]) -> Schema:
        return schema_class(only=keys)

    def dump(source: dict[str, Any]) -> dict[str, Any]:
        present = {key: value for key, value in source.items() if value is not None and key in declared}
        return schema_for(frozenset(present)).dump(present)

    return dump
