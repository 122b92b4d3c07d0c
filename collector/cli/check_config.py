"""``collector check-config``: every problem of a configuration file, with its key path; warnings for legal settings a site owner most likely did not mean."""

from __future__ import annotations

import argparse
import sys

from collector.cli.options import add_command, config_path
from collector.config import defaults
from collector.config.loading import ConfigError, load_config
from collector.config.schema import CollectorConfig


def config_warnings(config: CollectorConfig) -> list[str]:
    """Legal settings that a site owner most likely did not mean."""
    warnings = []
    for site in config.sites.values():
        if not site.origins:
            warnings.append(
                f"sites.{site.name}.origins: empty, so pages of any origin may send events for this site "
                "(though none can read the answers or send the visitor cookie)"
            )
        if (
            site.commerce is not None
            and defaults.ALL_EVENTS in site.commerce.events
            and site.limits.web_events_per_request < defaults.SNIPPET_BATCH_EVENTS
        ):
            warnings.append(
                f"sites.{site.name}.limits.web_events_per_request: {site.limits.web_events_per_request} is below the "
                f"{defaults.SNIPPET_BATCH_EVENTS} events the snippet may send in one request while Commerce takes every event"
            )
        if site.depict is None and site.commerce is None:
            warnings.append(f"sites.{site.name}: no destination; its events are accepted and dropped")
        for name, destination in (("depict", site.depict), ("commerce", site.commerce)):
            if destination is not None and destination.url.startswith("http://"):
                warnings.append(f"sites.{site.name}.{name}.url: plain http sends the API key unencrypted")
    return warnings


def run(args: argparse.Namespace) -> int:
    path = config_path(args)
    if not path:
        print("collector check-config: pass --config PATH or set COLLECTOR_CONFIG", file=sys.stderr)
        return 2
    try:
        config = load_config(path)
    except ConfigError as error:
        print(f"{path}: {len(error.problems)} problem(s)", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    for site in config.sites.values():
        destinations = [name for name in ("depict", "commerce") if getattr(site, name) is not None]
        print(f"site {site.name}: {', '.join(destinations) or 'no destination'}")
    print(f"{path}: ok")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    add_command(
        commands,
        "check-config",
        run,
        "report every problem of a configuration file",
        "Report every problem of a configuration file with its key path; exit 1 if\n"
        "there is one.",
    )
