"""``collector dev``: everything in one process tree for a laptop.

An embedded Redis (unless ``REDIS_URL``), the collector on a thread, and
the worker supervisor in the main thread; with no ``--config``, the demo
site, whose destinations check each delivery against the vendors' specs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from collector.cli.options import add_command, add_listen_options, config_path, listen_port, require_config

access_log = logging.getLogger("collector.access")

DEV_DRAIN_SECONDS = 2.0


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


def run(args: argparse.Namespace) -> int:
    """Embedded Redis, the collector on a thread, the worker supervisor in the main thread; demo without --config."""
    from collector import create_app
    from collector.demo import demo_config
    from collector.storage.redis_server import EmbeddedRedis, redis_address
    from worker.process import run_worker

    port = listen_port(args)
    demo = config_path(args) is None
    config = demo_config(port) if demo else require_config(args)
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



def add_parser(commands: argparse._SubParsersAction) -> None:
    sub = add_command(
        commands,
        "dev",
        run,
        "everything in one process tree for a laptop: embedded Redis, the collector, a worker, the demo site",
        "Start an embedded Redis (unless REDIS_URL is set), the collector and a worker\n"
        "in one process tree. Without --config (and COLLECTOR_CONFIG) it serves a demo\n"
        "shop page whose destinations check each delivery against the vendors' specs\n"
        "instead of calling them. It prints the URL to open, then one line per delivery\n"
        "job and per refused request. Ctrl-C stops it.",
        config_default=", else the demo site",
    )
    add_listen_options(sub, "127.0.0.1", "the address to listen on")
