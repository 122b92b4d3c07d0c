"""What the commands share: the ``--config``, ``--host``, ``--port`` and ``--log-format`` options, and what they read from them and from ``REDIS_URL``."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable

from collector.config import defaults
from collector.config.loading import ConfigError, load_config
from collector.config.schema import CollectorConfig
from collector.observe.logs import FORMAT_ENV, FORMATS, redacted_url

log = logging.getLogger("collector")

PORT_ENV = "COLLECTOR_PORT"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions; adds ``(default: X)`` to an option's help unless the help names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def add_command(
    commands: argparse._SubParsersAction,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    help_text: str,
    description: str,
    config_default: str = "",
) -> argparse.ArgumentParser:
    """A command of the group, with the ``--config`` option every command takes."""
    sub = commands.add_parser(name, help=help_text, description=description, formatter_class=HelpFormatter)
    sub.add_argument(
        "--config", metavar="PATH", help=f"the site configuration, a TOML file (default: $COLLECTOR_CONFIG{config_default})"
    )
    sub.set_defaults(handler=handler)
    return sub


def add_listen_options(sub: argparse.ArgumentParser, host: str, host_help: str) -> None:
    sub.add_argument("--host", default=host, help=host_help)
    sub.add_argument(
        "--port", type=int, default=None, help=f"the port to listen on (default: ${PORT_ENV}, else {defaults.DEFAULT_PORT})"
    )


def add_log_format_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help=f"text lines, or one JSON object per line (default: ${FORMAT_ENV}, else text)",
    )


def config_path(args: argparse.Namespace) -> str | None:
    return args.config or os.environ.get("COLLECTOR_CONFIG")


def require_config(args: argparse.Namespace) -> CollectorConfig:
    path = config_path(args)
    if not path:
        raise SystemExit("collector: no configuration; pass --config PATH or set COLLECTOR_CONFIG")
    try:
        return load_config(path)
    except ConfigError as error:
        raise SystemExit("collector: the configuration has problems:\n  " + "\n  ".join(error.problems)) from None


def require_redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        raise SystemExit("collector: set REDIS_URL to the Redis server that the collector and its workers share")
    warn_about_durability(url)
    return url


def warn_about_durability(url: str) -> None:
    from redis import Redis

    from collector.storage.redis_server import durability_warnings

    try:
        redis = Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    except ValueError as error:
        raise SystemExit(f"collector: REDIS_URL is not a Redis URL: {redacted_url(str(error))}") from None
    try:
        for warning in durability_warnings(redis):
            log.warning("%s", warning)
    finally:
        redis.close()


def listen_port(args: argparse.Namespace) -> int:
    if args.port is not None:
        return args.port
    value = os.environ.get(PORT_ENV, "").strip()
    if not value:
        return defaults.DEFAULT_PORT
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SystemExit(f"collector: {PORT_ENV}={value!r} is not a port number")
    return int(value)
