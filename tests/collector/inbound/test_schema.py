"""The envelope of POST /collect: the fast path for what the snippet sends agrees with Marshmallow."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from collector.config import defaults
from collector.inbound.schema import _envelope, load_envelope

MAX = 10
EVENT = {"id": "abcdefgh12", "type": "page_view"}
ENVELOPES = [
    {"site": "s", "events": [EVENT]},
    {"site": "s", "events": [EVENT], "consent": True},
    {"site": "s", "events": [EVENT], "consent": False},
    {"site": "s" * defaults.MAX_SITE_NAME_LENGTH, "events": [EVENT] * MAX},
    {"site": "s" * (defaults.MAX_SITE_NAME_LENGTH + 1), "events": [EVENT]},
    {"site": "", "events": [EVENT]},
    {"site": 5, "events": [EVENT]},
    {"site": "s", "events": []},
    {"site": "s", "events": [EVENT] * (MAX + 1)},
    {"site": "s", "events": [EVENT, "x"]},
    {"site": "s", "events": {"0": EVENT}},
    {"site": "s", "events": [EVENT], "consent": 1},
    {"site": "s", "events": [EVENT], "consent": "yes"},
    {"site": "s", "events": [EVENT], "extra": 1},
    {"events": [EVENT]},
    {"site": "s"},
]


def _marshmallow_accepts(body: dict) -> bool:
    try:
        loaded = _envelope.load(body)
    except ValidationError:
        return False
    return len(loaded["events"]) <= MAX


@pytest.mark.parametrize("body", ENVELOPES)
def test_the_fast_path_accepts_exactly_what_marshmallow_accepts(body: dict) -> None:
    try:
        load_envelope(body, MAX)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == _marshmallow_accepts(body)
