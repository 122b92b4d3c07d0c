"""The ``collector`` command: dev, serve, worker, replay, check-config.

Every command takes ``--config PATH`` (default: ``$COLLECTOR_CONFIG``).
``serve``, ``worker`` and ``replay`` need ``REDIS_URL``; ``dev`` starts an
embedded Redis when it is unset.

Stopping (Ctrl-C, SIGINT or SIGTERM) is ordered: the delivery processes and
the HTTP server first, the embedded Redis last; the child processes leave
SIGINT to their parent, so a Ctrl-C that reaches the whole process group
stops everything the same way as one that reaches the main process alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collector import defaults
from collector.config import CollectorConfig, ConfigError, load_config
from collector.logs import DEV, FORMAT_ENV, FORMATS, PROD, default_format, redacted_url, setup

log = logging.getLogger("collector")
access_log = logging.getLogger("collector.access")

DISTRIBUTION = "first-party-collector"
PORT_ENV = "COLLECTOR_PORT"
DEV_DRAIN_SECONDS = 2.0

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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions; adds ``(default: X)`` to an option's help unless the help names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def package_version() -> str:
    """The version that runs: a source tree's ``pyproject.toml``, else the installed distribution's metadata."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
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

    try:
        redis = Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    except ValueError as error:
        raise SystemExit(f"collector: REDIS_URL is not a Redis URL: {redacted_url(str(error))}") from None
    try:
        for warning in durability_warnings(redis):
            log.warning("%s", warning)
    finally:
        redis.close()


def _port(args: argparse.Namespace) -> int:
    if args.port is not None:
        return args.port
    value = os.environ.get(PORT_ENV, "").strip()
    if not value:
        return defaults.DEFAULT_PORT
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SystemExit(f"collector: {PORT_ENV}={value!r} is not a port number")
    return int(value)


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


class DevHTTP:
    """The collector of ``collector dev`` on a thread, quiet, and stopped before Redis goes away.

    It logs a line only for a refused request (4xx/5xx) that the collector did
    not already explain in a warning of its own, and none for the demo's own
    endpoints under ``/_demo/`` (the page polls them every second).
    :meth:`stop` first answers new requests 503 (and closes keep-alive
    connections), waits up to ``DEV_DRAIN_SECONDS`` for the requests in
    flight, then shuts the server down.
    """

    def __init__(self, host: str, port: int, app: Callable[..., Any]):
        from werkzeug.serving import make_server

        self.draining = False
        self._active = 0
        self._idle = threading.Condition()
        self._app = app
        self._request = threading.local()  # a request runs on one thread, from the app to its access line
        self.server = make_server(host, port, self._wsgi, threaded=True, request_handler=self._request_handler())
        logging.getLogger("collector.errors").addFilter(self._note_explained)

    def _note_explained(self, record: logging.LogRecord) -> bool:
        self._request.explained = True
        return True

    def explained(self) -> bool:
        return getattr(self._request, "explained", False)

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        self._request.explained = False
        with self._idle:
            if self.draining:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Retry-After", "1")])
                return [b"collector dev is stopping\n"]
            self._active += 1
        try:
            return self._app(environ, start_response)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _request_handler(self) -> type:
        from werkzeug.serving import WSGIRequestHandler

        http = self

        class DevRequestHandler(WSGIRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                try:
                    status = int(code)
                except (TypeError, ValueError):
                    return
                path = urlsplit(getattr(self, "path", "") or "").path
                if status < 400 or http.draining or http.explained() or path.startswith("/_demo/"):
                    return
                access_log.info("%s %s %s", getattr(self, "command", "-"), path, status)

            def handle_one_request(self) -> None:
                super().handle_one_request()
                if http.draining:
                    self.close_connection = True

        return DevRequestHandler

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="http", daemon=True).start()

    def stop(self) -> None:
        with self._idle:
            self.draining = True
            deadline = time.monotonic() + DEV_DRAIN_SECONDS
            while self._active and time.monotonic() < deadline:
                self._idle.wait(max(deadline - time.monotonic(), 0.01))
        self.server.shutdown()
        self.server.server_close()
        logging.getLogger("collector.errors").removeFilter(self._note_explained)


def dev(args: argparse.Namespace) -> int:
    """Embedded Redis, the collector on a thread, the worker supervisor in the main thread; demo without --config."""
    from collector import create_app
    from collector.demo import demo_config
    from collector.redis_server import EmbeddedRedis, redis_address
    from worker.process import run_worker

    port = _port(args)
    demo = _config_path(args) is None
    config = demo_config(port) if demo else _require_config(args)
    embedded: EmbeddedRedis | None = None
    http: DevHTTP | None = None
    try:
        if not os.environ.get("REDIS_URL"):
            embedded = EmbeddedRedis().start()
        redis_url = os.environ.get("REDIS_URL") or embedded.url  # type: ignore[union-attr]
        app = create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": redis_url, "DEMO": demo})
        http = DevHTTP(args.host, port, app)  # a port in use: werkzeug says so and exits 1
        http.start()
        from redis import Redis

        where = redis_address(Redis.from_url(redis_url))
        shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "") else f"[{args.host}]" if ":" in args.host else args.host
        what = "demo site" if demo else "sites " + ", ".join(config.sites)
        redis_text = f"embedded Redis at {where}" if embedded else f"Redis at {where}"
        print(f"collector dev: open http://{shown_host}:{port}/  ({what}; {redis_text}; Ctrl-C stops)", flush=True)
        run_worker(config, redis_url)
    except KeyboardInterrupt:  # a stop during start-up; once the workers run, their supervisor takes the signals
        pass
    finally:
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop_signal, signal.SIG_IGN)  # the stop is under way, and bounded
        if http is not None:
            http.stop()
        if embedded is not None:
            embedded.stop()
    print("collector dev: stopped", flush=True)
    return 0


def serve(args: argparse.Namespace) -> int:
    """The collector under gunicorn (sync workers), for production.

    Ctrl-C (SIGINT) stops it as SIGTERM does: the workers finish the requests
    in flight (gunicorn's own SIGINT is a quick shutdown that cuts answers
    mid-write); a second Ctrl-C makes it quick. The workers leave SIGINT to
    the master, so a Ctrl-C to the whole process group stops them the same way.
    """
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter

    from collector import create_app
    from collector.logs import gunicorn_logger_class

    config = _require_config(args)
    redis_url = _require_redis_url()
    port = _port(args)
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="collector-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    owner = os.getpid()

    class GracefulOnCtrlC(Arbiter):
        def handle_int(self) -> None:
            self.handle_term()

    class CollectorServer(BaseApplication):
        def run(self) -> None:
            try:
                GracefulOnCtrlC(self).run()
            except RuntimeError as error:  # as BaseApplication.run
                print(f"\nError: {error}\n", file=sys.stderr, flush=True)
                sys.exit(1)

        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("worker_class", "sync")
            self.cfg.set("keepalive", 5)
            self.cfg.set("child_exit", _forget_metrics_of_dead_worker)
            self.cfg.set("post_worker_init", _leave_sigint_to_the_master)
            self.cfg.set("logger_class", gunicorn_logger_class())
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn 25.1+ opens ~/.gunicorn/gunicorn.ctl, one path for every server of the user
                self.cfg.set("control_socket_disable", True)

        def load(self):  # noqa: ANN202 - gunicorn's API
            return create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": redis_url, "COLLECTOR_PROCESSES": args.workers})

    try:
        CollectorServer().run()
    finally:
        # gunicorn's workers are forks of this process and leave through here too: only the master cleans up
        if metrics_dir is not None and os.getpid() == owner:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _leave_sigint_to_the_master(worker: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _forget_metrics_of_dead_worker(server: object, worker: object) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def worker(args: argparse.Namespace) -> int:
    from worker.process import run_worker

    run_worker(_require_config(args), _require_redis_url(), burst=args.burst)
    log.info("worker stopped")
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
    parser = argparse.ArgumentParser(prog="collector", description=DESCRIPTION, epilog=EPILOG, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str, description: str, config_default: str = ""
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=description, formatter_class=_HelpFormatter)
        sub.add_argument(
            "--config", metavar="PATH", help=f"the site configuration, a TOML file (default: $COLLECTOR_CONFIG{config_default})"
        )
        sub.set_defaults(handler=handler)
        return sub

    def listen(sub: argparse.ArgumentParser, host: str, host_help: str) -> None:
        sub.add_argument("--host", default=host, help=host_help)
        sub.add_argument(
            "--port", type=int, default=None, help=f"the port to listen on (default: ${PORT_ENV}, else {defaults.DEFAULT_PORT})"
        )

    def log_format(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--log-format",
            choices=FORMATS,
            default=None,
            help=f"text lines, or one JSON object per line (default: ${FORMAT_ENV}, else text)",
        )

    sub = command(
        "dev",
        dev,
        "everything in one process tree for a laptop: embedded Redis, the collector, a worker, the demo site",
        "Start an embedded Redis (unless REDIS_URL is set), the collector and a worker\n"
        "in one process tree. Without --config (and COLLECTOR_CONFIG) it serves a demo\n"
        "shop page whose destinations check each delivery against the vendors' specs\n"
        "instead of calling them. It prints the URL to open, then one line per delivery\n"
        "job and per refused request. Ctrl-C stops it.",
        config_default=", else the demo site",
    )
    listen(sub, "127.0.0.1", "the address to listen on")

    sub = command(
        "serve",
        serve,
        "the collector for production, under gunicorn",
        "Run the collector under gunicorn with sync workers. Needs REDIS_URL and a\n"
        "configuration. SIGTERM or Ctrl-C stops it.",
    )
    listen(sub, "127.0.0.1", "the address to listen on (127.0.0.1, as gunicorn's own default; --host 0.0.0.0 in a container)")
    cpus = os.cpu_count() or 1
    sub.add_argument("--workers", type=int, default=2 * cpus + 1, help=f"gunicorn worker processes, 2 x {cpus} CPUs + 1")
    log_format(sub)

    sub = command(
        "worker",
        worker,
        "the forwarding workers for production",
        "Dispatch the outboxes into delivery jobs and deliver them: a supervisor with\n"
        "one delivery process per destination. Needs REDIS_URL and a configuration.\n"
        "SIGTERM or Ctrl-C stops it.",
    )
    sub.add_argument(
        "--burst", action="store_true", help="quit once the outboxes and queues are empty (default: run until stopped)"
    )
    log_format(sub)

    sub = command(
        "replay",
        replay,
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

    command(
        "check-config",
        check_config,
        "report every problem of a configuration file",
        "Report every problem of a configuration file with its key path; exit 1 if\n"
        "there is one.",
    )
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


if __name__ == "__main__":
    sys.exit(main())
