"""The ``collector`` command: dev, serve, worker, replay, check-config.

Every command takes ``--config PATH`` (default: ``$COLLECTOR_CONFIG``).
``serve``, ``worker`` and ``replay`` need ``REDIS_URL``; ``dev`` starts an
embedded Redis when it is unset.

Stopping (Ctrl-C, SIGINT or SIGTERM) is ordered: the delivery processes and
the HTTP server first, the embedded Redis last; the child processes leave
SIGINT to their parent, so a Ctrl-C that reaches the whole process group
stops everything the same way as one that reaches the main process alone.

Each command is a module of this package (its options and its handler);
this one builds the command group, in the order ``--help`` lists them, and
runs the chosen command.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Sequence
from pathlib import Path

from collector.cli import check_config, dev, replay, serve, worker
from collector.cli.options import PORT_ENV, HelpFormatter
from collector.config import defaults
from collector.observe.logs import DEV, FORMAT_ENV, PROD, default_format, setup

DISTRIBUTION = "first-party-collector"
COMMANDS = (dev, serve, worker, replay, check_config)

DESCRIPTION = """\
A first-party commerce event collector. Pages send events to it with the t.js
snippet; it checks and queues them in Redis, and its workers deliver them to
Depict and Drivly Commerce."""

EPILOG = f"""\
environment:
  REDIS_URL                 the Redis server of the collector and its workers
                            (required by serve, worker and replay; dev starts an
                            embedded one when it is unset)
  COLLECTOR_CONFIG          the configuration file, when --config is not given
  {FORMAT_ENV:<24}  text or json: the default of --log-format
  {PORT_ENV:<24}  the default of --port of dev and serve (else {defaults.DEFAULT_PORT})
  PROMETHEUS_MULTIPROC_DIR  where serve's processes share their metrics (serve
                            makes a temporary folder and removes it when unset)

Run 'collector COMMAND --help' for the options of a command."""


def package_version() -> str:
    """The version that runs: a source tree's ``pyproject.toml``, else the installed distribution's metadata."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        try:
            project = tomllib.loads(pyproject.read_text()).get("project", {})
            if project.get("name") == DISTRIBUTION and project.get("version"):
                return str(project["version"])
        except (OSError, tomllib.TOMLDecodeError):
            pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collector", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    long_running = args.command in ("dev", "serve", "worker")
    log_format = "text" if args.command == "dev" else getattr(args, "log_format", None) or default_format()
    setup(log_format, DEV if args.command == "dev" else PROD, export=args.command in ("dev", "worker"))
    if long_running:
        # until the supervisor (or gunicorn) installs its own handlers, SIGTERM stops like Ctrl-C
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return args.handler(args)
    except KeyboardInterrupt:  # stopped while starting (the long-running commands), or a short command cut short
        return 0 if long_running else 130
