"""Where in the TOML file a problem is, and which key was meant: what makes ``check-config``'s report actionable.

Python's ``tomllib`` keeps no positions, so the file's lines are read again
here, just enough to know which line defines which key path: table headers
(``[sites.my_store.depict]``, quoted parts included) and ``key = value``
lines (dotted keys too). A problem's key path is matched to the longest
path that has a line (``sites.my_store.origins[0]`` is on the line of
``sites.my_store.origins``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

_HEADER = re.compile(r"^\s*\[\[?\s*(?P<name>[^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*(?P<key>(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
_PART = re.compile(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""")
_UNKNOWN = "Unknown field."
_PROBLEM = re.compile(r"^(?P<path>[^:]+): (?P<message>.*)$", re.DOTALL)


def _parts(dotted: str) -> list[str]:
    return [part[1:-1] if part[0] in "\"'" else part for part in _PART.findall(dotted)]


def key_lines(text: str) -> dict[str, int]:
    """Every key path the file defines, with the (1-based) line that defines it."""
    lines: dict[str, int] = {}
    table: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _parts(header.group("name"))
            lines.setdefault(".".join(table), number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault(".".join([*table, *_parts(key.group("key"))]), number)
    return lines


def line_of(path: str, lines: dict[str, int]) -> int | None:
    """The line of ``path``, or of the nearest enclosing key the file names."""
    parts = path.replace("[", ".[").split(".")
    while parts:
        candidate = ".".join(part for part in parts if not part.startswith("["))
        if candidate in lines:
            return lines[candidate]
        parts.pop()
    return None


def meant(unknown: str, known: Iterable[str]) -> str | None:
    """The known key an unknown one most likely misspells."""
    close = difflib.get_close_matches(unknown, sorted(set(known)), n=1, cutoff=0.7)
    return close[0] if close else None


def annotated(problems: list[str], text: str, known_keys: Iterable[str]) -> list[str]:
    """The problems in the order of the file, each with its line, and a suggestion for each unknown key."""
    lines = key_lines(text)
    known = list(known_keys)
    located: list[tuple[int, str]] = []
    for problem in problems:
        match = _PROBLEM.match(problem)
        if match is None:
            located.append((0, problem))
            continue
        path, message = match.group("path"), match.group("message")
        if message == _UNKNOWN:
            suggestion = meant(path.rsplit(".", 1)[-1], known)
            message = f"unknown key; did you mean `{suggestion}`?" if suggestion else "unknown key"
        number = line_of(path, lines)
        located.append((number or 0, f"line {number}: {path}: {message}" if number is not None else f"{path}: {message}"))
    return [problem for _, problem in sorted(located)]
