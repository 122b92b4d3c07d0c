"""The ``collector`` command: dev, serve, worker, replay, check-config.

Every command takes ``--config PATH`` (default: ``$COLLECTOR_CONFIG``).
``serve`` and ``worker`` need ``REDIS_URL``; ``dev`` starts an embedded
Redis when it is unset.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Sequence

from collector import defaults
from collector.config import CollectorConfig, ConfigError, load_config

log = logging.getLogger("collector")


def _config_path(args: argparse.Namespace) -> str | None:
    return args.config or os.environ.get("COLLECTOR_CONFIG")


def _require_config(args: argparse.Namespace) -> CollectorConfig:
    path = _config_path(args)
    if not path:
        raise SystemExit("collector: no configuration; pass --config PATH or set COLLECTOR_CONFIG")
    try:
        return load_config(path)
    except ConfigError as error:
        raise SystemExit("collector: the configuration has problems:\n  " + "\n  ".join(error.problems)) from None


def _require_redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        raise SystemExit("collector: set REDIS_URL to the Redis server that the collector and its workers share")
    _warn_about_durability(url)
    return url


def _warn_about_durability(url: str) -> None:
    from redis import Redis

    from collector.redis_server import durability_warnings

    for warning in durability_warnings(Redis.from_url(url, socket_connect_timeout=5)):
        log.warning("redis at %s: %s", url.split("@")[-1], warning)


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


def check_config(args: argparse.Namespace) -> int:
    path = _config_path(args)
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


def dev(args: argparse.Namespace) -> int:
    """Embedded Redis, the collector on a thread, the worker in the main thread; demo without --config."""
    from werkzeug.serving import make_server

    from collector import create_app
    from collector.demo import demo_config
    from collector.redis_server import EmbeddedRedis
    from worker.process import run_worker

    embedded = None if os.environ.get("REDIS_URL") else EmbeddedRedis().start()
    redis_url = os.environ.get("REDIS_URL") or embedded.url  # type: ignore[union-attr]
    try:
        demo = _config_path(args) is None
        config = demo_config(args.port) if demo else _require_config(args)
        app = create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": redis_url, "DEMO": demo})
        server = make_server(args.host, args.port, app, threaded=True)
        threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
        shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
        print(f"collector dev: open http://{shown_host}:{args.port}/" + ("  (demo site)" if demo else ""), flush=True)
        print(f"collector dev: redis at {redis_url}" + (" (embedded)" if embedded else ""), flush=True)
        try:
            run_worker(config, redis_url)
        finally:
            server.shutdown()
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def serve(args: argparse.Namespace) -> int:
    """The collector under gunicorn (sync workers), for production."""
    from gunicorn.app.base import BaseApplication

    from collector import create_app

    config = _require_config(args)
    redis_url = _require_redis_url()
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="collector-metrics-"))

    class CollectorServer(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("worker_class", "sync")
            self.cfg.set("keepalive", 5)
            self.cfg.set("child_exit", _forget_metrics_of_dead_worker)

        def load(self):  # noqa: ANN202 - gunicorn's API
            return create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": redis_url})

    CollectorServer().run()
    return 0


def _forget_metrics_of_dead_worker(server: object, worker: object) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def worker(args: argparse.Namespace) -> int:
    from worker.process import run_worker

    run_worker(_require_config(args), _require_redis_url(), burst=args.burst)
    return 0


def replay(args: argparse.Namespace) -> int:
    from redis import Redis

    from worker.replay import purge_dead_letters, replay_dead_letters

    _require_config(args)
    redis = Redis.from_url(_require_redis_url())
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collector", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:  # noqa: ANN001
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", help="the site configuration TOML (default: $COLLECTOR_CONFIG)")
        sub.set_defaults(handler=handler)
        return sub

    sub = command("dev", dev, "everything in one process tree for a laptop (demo site without --config)")
    sub.add_argument("--host", default="127.0.0.1")
    sub.add_argument("--port", type=int, default=defaults.DEFAULT_PORT)

    sub = command("serve", serve, "the collector for production, under gunicorn")
    sub.add_argument("--host", default="0.0.0.0")
    sub.add_argument("--port", type=int, default=defaults.DEFAULT_PORT)
    sub.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1)

    sub = command("worker", worker, "the forwarding worker for production")
    sub.add_argument("--burst", action="store_true", help="quit when the outboxes and queues are empty")

    sub = command("replay", replay, "requeue dead-lettered deliveries, or purge them")
    sub.add_argument("--site")
    sub.add_argument("--destination", choices=defaults.DESTINATIONS)
    sub.add_argument("--status", type=int, help="only those the vendor answered with this HTTP status")
    action = sub.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="only show what would be requeued")
    action.add_argument("--purge", action="store_true", help="delete the matching dead letters for good")

    command("check-config", check_config, "report every problem of a configuration file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
