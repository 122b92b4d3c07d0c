"""``collector worker``: the forwarding workers for production (``worker/process.py``)."""

from __future__ import annotations

import argparse

from collector.cli.options import add_command, add_log_format_option, log, require_config, require_redis_url


def run(args: argparse.Namespace) -> int:
    from worker.process import run_worker

    run_worker(require_config(args), require_redis_url(), burst=args.burst)
    log.info("worker stopped")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    sub = add_command(
        commands,
        "worker",
        run,
        "the forwarding workers for production",
        "Dispatch the outboxes into delivery jobs and deliver them: a supervisor with\n"
        "one delivery process per destination. Needs REDIS_URL and a configuration.\n"
        "SIGTERM or Ctrl-C stops it.",
    )
    sub.add_argument(
        "--burst", action="store_true", help="quit once the outboxes and queues are empty (default: run until stopped)"
    )
    add_log_format_option(sub)
