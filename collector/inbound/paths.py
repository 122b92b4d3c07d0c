"""The three browser-facing paths, renamable under ``[collector.paths]``.

Ad-block lists match URL paths. None names ours today (``t.js``,
``/collect``, ``/sites/<site>/settings.json``; checked 2026-12-04), but the
lists already hold rules such as ``/collect?tid=``, so the day one names a
path of ours every shop must be able to step aside with a line of config,
as Snowplow's users can. Hence:

- the routes of the snippet, of ``/collect`` and of the site settings are
  added where the config says (:func:`configured_paths`), and nowhere else:
  with renamed paths the default ones answer 404;
- the snippet learns the other two from the server, so a page's tag names
  only the snippet's URL: ``collector/inbound/snippet.py`` writes them into the
  script it serves as references *relative to the snippet's own folder*
  (:func:`relative_reference`). The browser resolves them against the URL
  it loaded the script from, so a proxy's prefix (``/_c/`` on the shop's
  host) or a subdomain is kept without the collector knowing of either.

A path is plain: ``/`` then segments of letters, digits and ``. _ ~ -``
(no ``.``/``..`` segment, no query), so it needs no escaping in a URL, a
Werkzeug rule or a JavaScript string. It may not take one of the
collector's other URLs (``FIXED_PATHS``, ``FIXED_PATH_PREFIXES``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask import Flask

from collector.config import defaults

_SEGMENT = r"[A-Za-z0-9._~-]+"
_PATH = re.compile(rf"^(?:/{_SEGMENT})+/?$")
_SITE_FILLER = "site"  # stands in for {site} when a template's syntax is checked
SITE_RULE = "<site_name>"  # what {site} becomes in the Werkzeug rule


@dataclass(frozen=True)
class CollectorPaths:
    """Where the snippet, ``/collect`` and the site settings are served (``site_settings`` holds ``{site}`` once)."""

    snippet: str = defaults.DEFAULT_SNIPPET_PATH
    collect: str = defaults.DEFAULT_COLLECT_PATH
    site_settings: str = defaults.DEFAULT_SITE_SETTINGS_PATH

    @property
    def site_settings_rule(self) -> str:
        return self.site_settings.replace(defaults.SITE_PLACEHOLDER, SITE_RULE)


def is_fixed(path: str) -> bool:
    """Whether ``path`` is one of the collector's other URLs (the probes, ``/v1/``, the console, the demo)."""
    return path in defaults.FIXED_PATHS or any(path.startswith(prefix) or path == prefix.rstrip("/") for prefix in defaults.FIXED_PATH_PREFIXES)


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a browser-facing path, or None when it can."""
    if not _PATH.match(path) or any(segment in (".", "..") for segment in path.split("/")):
        return "must be / then segments of letters, digits and . _ ~ - (no query, no . or .. segment)"
    if is_fixed(path):
        return f"{path} is one of the collector's own URLs"
    return None


def snippet_problem(path: str) -> str | None:
    """Why ``path`` cannot be the snippet's: a browser-facing path that names a file."""
    return path_problem(path) or ("names a file: it may not end with /" if path.endswith("/") else None)


def template_problem(template: str) -> str | None:
    """Why ``template`` cannot be the site settings path, or None when it can."""
    if template.count(defaults.SITE_PLACEHOLDER) != 1:
        return f"must hold {defaults.SITE_PLACEHOLDER} exactly once"
    return path_problem(template.replace(defaults.SITE_PLACEHOLDER, _SITE_FILLER))


def _matches_template(path: str, template: str) -> bool:
    head, _, tail = template.partition(defaults.SITE_PLACEHOLDER)
    return re.fullmatch(re.escape(head) + "[^/]+" + re.escape(tail), path) is not None


def clash_problem(paths: CollectorPaths) -> str | None:
    """Why the three paths cannot be served side by side, or None when they can."""
    if paths.snippet == paths.collect:
        return "snippet and collect must differ"
    for name in ("snippet", "collect"):
        if _matches_template(getattr(paths, name), paths.site_settings):
            return f"{name} would be taken by site_settings"
    return None


def relative_reference(from_path: str, to_path: str) -> str:
    """``to_path`` as a URL reference relative to the folder of ``from_path``.

    ``/t.js`` -> ``/collect`` is ``collect``; ``/js/app.js`` -> ``/e`` is
    ``../e``: resolved against ``https://shop.example/_c/js/app.js`` it is
    ``https://shop.example/_c/e``.
    """
    folder = from_path.split("/")[1:-1]
    target = to_path.split("/")[1:]
    common = 0
    while common < len(folder) and common < len(target) - 1 and folder[common] == target[common]:
        common += 1
    return "../" * (len(folder) - common) + "/".join(target[common:]) or "./"


def configured_paths(app: Flask) -> CollectorPaths:
    """The paths of ``app``'s configuration; the defaults for an app without one (a bare app serving the snippet)."""
    state = app.extensions.get("collector")
    return state.config.settings.paths if state is not None else CollectorPaths()
