"""The vendor specs we validate against: copies kept in step, and the one mended defect still real."""

from __future__ import annotations

from pathlib import Path

import yaml

from collector.demo.vendor_spec import COMMERCE_SPEC, DEPICT_SPEC, VendorSpec, address_city

TEST_SPECS = Path(__file__).resolve().parents[2] / "specs"


def test_the_demo_ships_the_same_specs_as_the_tests_use():
    """The packaged copies (for `collector dev`) equal the tests' copies byte for byte."""
    assert DEPICT_SPEC.read_bytes() == (TEST_SPECS / DEPICT_SPEC.name).read_bytes()
    assert COMMERCE_SPEC.read_bytes() == (TEST_SPECS / COMMERCE_SPEC.name).read_bytes()


def test_the_commerce_address_city_defect_is_still_in_the_document():
    """Address.city is oneOf two same-shaped schemas, so as written no city could ever pass."""
    raw = yaml.safe_load((TEST_SPECS / "commerce-webevents.openapi.yaml").read_text())
    city = address_city(raw)
    assert "oneOf" in city and len(city["oneOf"]) == 2


def test_a_city_is_valid_once_the_defect_is_mended():
    """Read as anyOf, an Address with a city validates; a city without a name still fails."""
    spec = VendorSpec.load(TEST_SPECS / "commerce-webevents.openapi.yaml")
    address = {"id": "adr_1", "zip": "62704", "line1": "456 Elm", "city": {"name": "Springfield", "state": {"code": "IL"}}}
    assert spec.component_errors("Address", address) == []
    assert spec.component_errors("Address", {**address, "city": {"state": "IL"}}) != []
