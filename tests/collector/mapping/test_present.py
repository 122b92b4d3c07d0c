"""Dumping over only the present fields sends exactly what the whole schema would, minus nulls."""

from __future__ import annotations

import pytest

from collector.mapping.commerce import NewWebEventSchema
from collector.mapping.depict import DepictEventSchema
from marshmallow import Schema, fields

from collector.mapping.present import PresentString, present_fields_dumper

SOURCES = [
    {"tenant": "t", "market": "se", "type": "page_view", "user_id": "v1", "document_width": 1280},
    {"tenant": "t", "market": "se", "type": "add_to_cart", "product_id": "KEY-1", "entity_price": "9", "url": None},
    {"tenant": "t", "market": "se", "type": "purchase", "variant_ids": ["a", "b"], "entity_identifiers": {"sku": "1"}},
    {"tenant": "t", "market": "se", "type": "click", "account": {"id": "acc_1"}, "colour": "red"},
]


def _whole_schema_without_nulls(schema_class, source):
    """What Marshmallow's own fields dump over every declared field (PresentString as fields.String), minus nulls."""
    plain = Schema.from_dict(
        {name: fields.String() if isinstance(field, PresentString) else field for name, field in schema_class._declared_fields.items()}
    )
    declared = {key: value for key, value in source.items() if key in schema_class._declared_fields}
    return {key: value for key, value in plain().dump(declared).items() if value is not None}


@pytest.mark.parametrize("source", SOURCES)
def test_depict_events_match_the_whole_schemas_dump(source):
    assert present_fields_dumper(DepictEventSchema)(source) == _whole_schema_without_nulls(DepictEventSchema, source)


@pytest.mark.parametrize(
    "source",
    [{"id": "wev_1", "name": "User Login", "anonymousId": "v1", "account": None}, {"name": "x", "account": {"id": "a", "anonymousIds": ["v"]}}],
)
def test_web_events_match_the_whole_schemas_dump(source):
    assert present_fields_dumper(NewWebEventSchema)(source) == _whole_schema_without_nulls(NewWebEventSchema, source)

