"""Which parts of a Commerce ``Account`` a site lets its pages send.

A page may attach an ``Account`` to a Web Event (PROPS ``account``), and the
collector forwards it to Commerce with the site's API key. Anyone can post
to ``/collect``, so by default only identifiers pass (:data:`DEFAULT_ACCOUNT_FIELDS`:
``id``, ``anonymousIds``, ``consumer.id``, ``lead.id``); a field a site has not
listed in ``[sites.NAME.commerce] account_fields`` (an SSN, a birth date, a
name, an e-mail address, a phone number, an address) makes the event a 422
that names the field, never its value.

Fields are named by dotted paths from the Account (``consumer.email``,
``lead.favorites.vin``); list items share their list's path. Where the spec
lets an id stand in for a related object (``"consumer": "con_1"``), that id
is the object's ``id`` (``consumer.id``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from marshmallow import Schema, fields

from collector.config.defaults import DEFAULT_ACCOUNT_FIELDS
from collector.mapping.commerce_models import AccountSchema, IdOr

NOT_ALLOWED = "not accepted from a browser: add {path!r} to this site's commerce.account_fields to send it"


def _nested_schema(field: fields.Field) -> type[Schema] | None:
    if isinstance(field, fields.List):
        return _nested_schema(field.inner)
    if isinstance(field, IdOr):
        return field._schema_class
    if isinstance(field, fields.Nested) and isinstance(field.nested, type):
        return field.nested
    return None


def _paths(schema: type[Schema], prefix: str = "", seen: tuple[type[Schema], ...] = ()) -> Iterator[str]:
    for name, field in schema._declared_fields.items():
        path = prefix + name
        yield path
        nested = _nested_schema(field)
        if nested is not None and nested not in seen:
            yield from _paths(nested, path + ".", (*seen, nested))


ACCOUNT_FIELD_PATHS: tuple[str, ...] = tuple(sorted(set(_paths(AccountSchema))))
"""Every field of Commerce's Account and what it nests, as ``account_fields`` names them."""

assert DEFAULT_ACCOUNT_FIELDS <= set(ACCOUNT_FIELD_PATHS)
_KNOWN_PATHS = frozenset(ACCOUNT_FIELD_PATHS)


def _covers(allowed: frozenset[str], path: str) -> bool:
    """Listed itself, or inside a listed object (``consumer`` allows ``consumer.ssn``)."""
    return any(path == name or path.startswith(name + ".") for name in allowed)


def _has_allowed_below(allowed: frozenset[str], path: str) -> bool:
    return any(name.startswith(path + ".") for name in allowed)


def _refused(value: Any, allowed: frozenset[str], prefix: str) -> Any:
    """Errors for one object (or id, or list of them) at ``prefix``, keyed as its keys; None when all pass."""
    if isinstance(value, str):
        id_path = prefix + "id"
        return None if _covers(allowed, id_path) else {"id": [NOT_ALLOWED.format(path=id_path)]}
    if isinstance(value, list):
        found = {index: _refused(item, allowed, prefix) for index, item in enumerate(value)}
        return {index: errors for index, errors in found.items() if errors} or None
    if not isinstance(value, dict):
        return None
    errors: dict[str, Any] = {}
    for key, item in value.items():
        path = prefix + key
        if _covers(allowed, path) or path not in _KNOWN_PATHS:  # a field the spec does not have: the schema refuses it
            continue
        found = _refused(item, allowed, path + ".") if _has_allowed_below(allowed, path) else [NOT_ALLOWED.format(path=path)]
        if found:
            errors[key] = found
    return errors or None


def refused_account_fields(account: Any, allowed: frozenset[str]) -> dict[str, Any] | None:
    """Marshmallow-shaped errors for every field of ``account`` the site does not allow; None when all pass."""
    return _refused(account, allowed, "")
