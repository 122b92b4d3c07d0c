"""The site configuration, loaded: one TOML file, read and checked once at start.

``${NAME}`` inside any string is replaced by the environment variable NAME
(``$${`` keeps a literal ``${``), so API keys stay out of the file. Every
problem is reported with its key path, all at once, and with its line in
the file (``lines.py``); what the file may say is ``schema.py``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from marshmallow import ValidationError

from collector.config.lines import annotated
from collector.config.schema import CollectorConfig, CollectorSettings, ConfigSchema, Site, config_keys

_ENV_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """The configuration file cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def interpolate_env(node: Any, environ: Mapping[str, str], path: str = "") -> tuple[Any, list[str]]:
    """Replace ``${NAME}`` in every string of ``node``; return the result and the problems."""
    problems: list[str] = []
    if isinstance(node, str):

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name = match.group(1)
            if name not in environ:
                problems.append(f"{path}: environment variable {name} is not set")
                return match.group(0)
            return environ[name]

        return _ENV_REFERENCE.sub(substitute, node), problems
    if isinstance(node, dict):
        result = {}
        for key, value in node.items():
            result[key], found = interpolate_env(value, environ, f"{path}.{key}" if path else key)
            problems.extend(found)
        return result, problems
    if isinstance(node, list):
        items = []
        for index, value in enumerate(node):
            item, found = interpolate_env(value, environ, f"{path}[{index}]")
            items.append(item)
            problems.extend(found)
        return items, problems
    return node, problems


def _flatten(messages: Any, path: str = "") -> list[str]:
    """Marshmallow's nested error dict as ``key.path: message`` lines."""
    if isinstance(messages, dict):
        lines: list[str] = []
        for key, value in messages.items():
            if key == "value" and isinstance(value, dict):  # errors of fields.Dict values
                lines.extend(_flatten(value, path))
                continue
            if key == "key":
                lines.extend(_flatten(value, path))
                continue
            if key == "_schema":
                lines.extend(_flatten(value, path))
                continue
            part = f"[{key}]" if isinstance(key, int) else str(key)
            child = f"{path}{part}" if part.startswith("[") else (f"{path}.{part}" if path else part)
            lines.extend(_flatten(value, child))
        return lines
    if isinstance(messages, list):
        return [line for item in messages for line in _flatten(item, path)]
    return [f"{path or '<file>'}: {messages}"]


def parse_config(document: Mapping[str, Any], environ: Mapping[str, str] | None = None, source: str = "<memory>") -> CollectorConfig:
    """Check and build a configuration from an already parsed TOML document."""
    interpolated, problems = interpolate_env(dict(document), os.environ if environ is None else environ)
    try:
        loaded = ConfigSchema().load(interpolated)
    except ValidationError as error:
        problems.extend(_flatten(error.messages))
        loaded = None
    if problems:
        raise ConfigError(sorted(set(problems)))
    assert loaded is not None
    sites = {name: Site(name=name, **_site_fields(values)) for name, values in loaded["sites"].items()}
    return CollectorConfig(
        sites=sites, settings=loaded.get("collector", CollectorSettings()), source=source, console=loaded.get("console")
    )


def _site_fields(values: dict[str, Any]) -> dict[str, Any]:
    if "origins" in values:
        values = {**values, "origins": tuple(values["origins"])}
    return values


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> CollectorConfig:
    """Read, interpolate and check the TOML file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        document = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from None
    try:
        return parse_config(document, environ, source=str(Path(path)))
    except ConfigError as error:
        raise ConfigError(annotated(error.problems, text, config_keys())) from None
