"""``collector serve``: the collector for production, under gunicorn."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile

from collector.cli.options import add_command, add_listen_options, add_log_format_option, listen_port, require_config, require_redis_url


def run(args: argparse.Namespace) -> int:
    """The collector under gunicorn (sync workers), for production.

    Ctrl-C (SIGINT) stops it as SIGTERM does: the workers finish the requests
    in flight (gunicorn's own SIGINT is a quick shutdown that cuts answers
    mid-write); a second Ctrl-C makes it quick. The workers leave SIGINT to
    the master, so a Ctrl-C to the whole process group stops them the same way.
    """
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter

    from collector import create_app
    from collector.observe.logs import gunicorn_logger_class

    config = require_config(args)
    redis_url = require_redis_url()
    port = listen_port(args)
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


def add_parser(commands: argparse._SubParsersAction) -> None:
    sub = add_command(
        commands,
        "serve",
        run,
        "the collector for production, under gunicorn",
        "Run the collector under gunicorn with sync workers. Needs REDIS_URL and a\n"
        "configuration. SIGTERM or Ctrl-C stops it.",
    )
    add_listen_options(sub, "127.0.0.1", "the address to listen on (127.0.0.1, as gunicorn's own default; --host 0.0.0.0 in a container)")
    cpus = os.cpu_count() or 1
    sub.add_argument("--workers", type=int, default=2 * cpus + 1, help=f"gunicorn worker processes, 2 x {cpus} CPUs + 1")
    add_log_format_option(sub)
