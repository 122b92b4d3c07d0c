"""The benchmark's one site, and the collector configuration file that names it.

Every stage writes its own TOML (like ``tests/conftest.py``'s ``config_toml``)
with both destinations pointing at the bench's vendor stand-ins and a rate
limit so high that the limiter never refuses (it still runs, as in
production: one Redis counter per request).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

SITE = "bench"
ORIGIN = "https://shop.example"
DEPICT_KEY = "bench-depict-key"
COMMERCE_KEY = "bench-commerce-key"
RATE_LIMIT = "100000000 per minute"


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def config_toml(depict_url: str, commerce_url: str, origins: Iterable[str], delivery: Mapping[str, object]) -> str:
    delivery_lines = "\n".join(f"{key} = {_toml_value(value)}" for key, value in delivery.items())
    origin_list = ", ".join(f'"{origin}"' for origin in origins)
    return f"""
[collector]
rate_limit = "{RATE_LIMIT}"

[collector.delivery]
{delivery_lines}

[sites.{SITE}]
origins = [{origin_list}]

[sites.{SITE}.limits]  # the bench measures capacity, from one simulated visitor: no budget may bind
events_per_minute = 1000000000
visitor_events_per_minute = 1000000000

[sites.{SITE}.depict]
url = "{depict_url}"
api_key = "{DEPICT_KEY}"
tenant = "bench_tenant"
market = "se"

[sites.{SITE}.commerce]
url = "{commerce_url}"
api_key = "{COMMERCE_KEY}"
"""


def write_config(
    path: Path,
    depict_url: str,
    commerce_url: str,
    origins: Iterable[str] = (ORIGIN,),
    delivery: Mapping[str, object] | None = None,
) -> Path:
    """Write the site config to ``path``; ``delivery`` overrides ``[collector.delivery]`` defaults."""
    path.write_text(config_toml(depict_url, commerce_url, origins, delivery or {}))
    return path
