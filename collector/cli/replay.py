"""``collector replay``: dead-lettered deliveries requeued, listed or purged (``worker/replay.py``)."""

from __future__ import annotations

import argparse
import sys

from collector.cli.options import add_command, require_config, require_redis_url
from collector.config import defaults


def run(args: argparse.Namespace) -> int:
    from redis import Redis

    from worker.replay import purge_dead_letters, replay_dead_letters

    require_config(args)
    redis = Redis.from_url(require_redis_url())
    filters = {"site": args.site, "destination": args.destination, "status": args.status}
    if args.purge:
        chosen = purge_dead_letters(redis, **filters)
    else:
        chosen = replay_dead_letters(redis, **filters, dry_run=args.list)
    for letter in chosen:
        delivery = letter.delivery
        print(
            f"{delivery['site']}\t{delivery['destination']}\t{delivery['id']}\t"
            f"{letter.status if letter.status is not None else '-'}\t{letter.reason}"
        )
    verb = "purged" if args.purge else "would requeue" if args.list else "requeued"
    print(f"{verb} {len(chosen)} dead-lettered deliveries", file=sys.stderr)
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    sub = add_command(
        commands,
        "replay",
        run,
        "requeue dead-lettered deliveries, or list or purge them",
        "Requeue the dead-lettered deliveries that match the filters, with their ids.\n"
        "Needs REDIS_URL and a configuration.",
    )
    sub.add_argument("--site", help="only this site's (default: every site)")
    sub.add_argument("--destination", choices=defaults.DESTINATIONS, help="only this destination's (default: both)")
    sub.add_argument("--status", type=int, help="only those the vendor answered with this HTTP status (default: any)")
    action = sub.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="only show what would be requeued (default: requeue)")
    action.add_argument("--purge", action="store_true", help="delete the matching dead letters for good (default: requeue)")
