"""The `collector` command as a person or an operator meets it: its help, its version, its output, its stop.

Each long-running command is started in its own process group on 127.0.0.1,
with a private TMPDIR and its output going to a file (not a terminal), then
stopped with SIGINT as a terminal sends it (to the whole group) or as
`kill -INT` does (to the main process alone). It must exit 0, promptly, with
no traceback, no ERROR, no colour codes, and nothing left in its TMPDIR.
Everything started here is ended by its PID.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector import cli
from collector.cli.options import warn_about_durability
from collector.storage.redis_server import durability_warnings, free_port
from tests.chromium import VISITOR_USER_AGENT
from tests.conftest import REPO
from tests.factories import make_event

COMMANDS = ("dev", "serve", "worker", "replay", "check-config")
START_SECONDS = 40
STOP_SECONDS = 15
JOB_LINE = re.compile(r"^\d\d:\d\d:\d\d demo/(depict|commerce): (\d+) delivered, 0 failed in \d+ ms$")
HOWS = {"group": "Ctrl-C: SIGINT to the process group", "main": "SIGINT to the main process alone"}


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    log: Path
    tmpdir: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self) -> list[str]:
        return [line for line in self.output().splitlines() if line.strip()]


@contextmanager
def started(tmp_path: Path, argv: list[str], env: dict[str, str] | None = None) -> Iterator[Running]:
    """`python -m collector ARGV` in its own session, TMPDIR and output in tmp_path; killed by PID if still running."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    log = tmp_path / "output.log"
    environment = {
        key: value for key, value in os.environ.items() if key not in ("COLLECTOR_CONFIG", "COLLECTOR_LOG_FORMAT", "REDIS_URL")
    }
    environment.update({"TMPDIR": str(tmpdir), **(env or {})})
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "collector", *argv],
            cwd=REPO, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    running = Running(process, log, tmpdir)
    try:
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_until(condition: Callable[[], object], running: Running, what: str, seconds: float = START_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            pytest.fail(f"exited with {running.process.returncode} before {what}:\n{running.output()[-3000:]}")
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"no {what} within {seconds} s:\n{running.output()[-3000:]}")


def answers(url: str, status: int = 200) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == status
    except urllib.error.HTTPError as error:
        return error.code == status
    except OSError:
        return False


def stop(running: Running, how: str, sig: signal.Signals = signal.SIGINT) -> float:
    """Send ``sig`` as ``how`` says; return how long the command took to exit (it must exit 0)."""
    started_at = time.monotonic()
    if how == "group":
        os.killpg(running.process.pid, sig)
    else:
        running.process.send_signal(sig)
    try:
        code = running.process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_SECONDS} s after {sig.name}:\n{running.output()[-3000:]}")
    assert code == 0, f"exit code {code}:\n{running.output()[-3000:]}"
    return time.monotonic() - started_at


def assert_quiet_and_clean(running: Running) -> None:
    output = running.output()
    assert "Traceback" not in output, output[-4000:]
    assert not re.search(r"\bERROR\b|\bCRITICAL\b", output), output[-4000:]
    assert "\x1b[" not in output, "colour codes in output that is not a terminal"
    assert list(running.tmpdir.iterdir()) == [], f"left in its TMPDIR: {list(running.tmpdir.iterdir())}"


# --help and --version ----------------------------------------------------------------------------


def test_help_describes_the_tool_and_lists_every_command_with_help():
    """`collector --help`: a plain description (no reStructuredText) and each command with what it does."""
    shown = subprocess.run(
        [sys.executable, "-m", "collector", "--help"], cwd=REPO, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert "``" not in shown and "first-party commerce event collector" in shown
    for name in COMMANDS:
        assert re.search(rf"^\s+{re.escape(name)}\s*\n?\s+\w", shown, re.MULTILINE), f"{name} is not listed with help:\n{shown}"
    for variable in ("REDIS_URL", "COLLECTOR_CONFIG", "COLLECTOR_LOG_FORMAT", "COLLECTOR_PORT"):
        assert variable in shown


def test_every_option_of_every_command_has_help_with_its_default():
    """Each option's help text exists and says its default (argparse adds it, or the text names it)."""
    parser = cli.build_parser()
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    assert set(commands.choices) == set(COMMANDS)
    for name, sub in commands.choices.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"collector {name} {action.option_strings}: no help"
            assert "default" in formatter._get_help_string(action), f"collector {name} {action.option_strings}: no default shown"
        shown = subprocess.run(
            [sys.executable, "-m", "collector", name, "--help"], cwd=REPO, capture_output=True, text=True, timeout=30, check=True
        ).stdout
        assert "(default:" in shown


@pytest.mark.parametrize("command", ["dev", "serve"])
def test_the_collector_listens_on_loopback_unless_told_otherwise(command):
    """`serve` binds 127.0.0.1 by default, as gunicorn does; `--host 0.0.0.0` opens it (a container)."""
    assert cli.build_parser().parse_args([command]).host == "127.0.0.1"
    assert cli.build_parser().parse_args([command, "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_version_is_the_package_version():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    shown = subprocess.run(
        [sys.executable, "-m", "collector", "--version"], cwd=REPO, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert shown.strip() == f"collector {version}"
    assert cli.package_version() == version


# dev ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", list(HOWS), ids=list(HOWS))
def test_dev_prints_its_url_then_one_line_per_delivery_job_and_stops_with_one_line(tmp_path, how):
    """`collector dev`: its URL first; for a posted batch one line per job; the demo's polling logs nothing;
    a stop ends it with one closing line, the embedded Redis last, nothing left behind."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with started(tmp_path, ["dev", "--port", str(port)]) as dev:
        wait_until(lambda: answers(f"{base}/readyz"), dev, "answer from /readyz")
        wait_until(lambda: len(dev.lines()) >= 1, dev, "first line")
        assert dev.lines()[0].startswith(f"collector dev: open {base}/"), dev.output()
        for path in ("/", "/t.js", "/sites/demo/settings.json", "/_demo/deliveries", "/_demo/deliveries", "/healthz"):
            assert answers(f"{base}{path}"), path
        batch = {"site": "demo", "events": [make_event("page_view", url=f"{base}/"), make_event("User Login", url=f"{base}/")]}
        request = urllib.request.Request(
            f"{base}/collect",
            data=json.dumps(batch).encode(),
            headers={"Content-Type": "application/json", "Origin": base, "User-Agent": VISITOR_USER_AGENT},  # the demo drops bots
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 202
        wait_until(lambda: sum(bool(JOB_LINE.match(line)) for line in dev.lines()) >= 2, dev, "a line per delivery job")
        for _ in range(3):  # the demo page's polling, once the deliveries are recorded
            assert answers(f"{base}/_demo/deliveries")
            time.sleep(0.2)
        assert answers(f"{base}/no-such-page", 404)  # a refused request: one line
        wait_until(lambda: any(line.endswith("GET /no-such-page 404") for line in dev.lines()), dev, "the 404's line")
        before = len(dev.lines())
        stop(dev, how)

    lines = dev.lines()
    assert lines[before:] == ["collector dev: stopped"], dev.output()
    jobs = [JOB_LINE.match(line) for line in lines[1:-2]]
    assert all(jobs), f"lines other than job lines:\n{dev.output()}"
    assert sorted((job.group(1), int(job.group(2))) for job in jobs if job) == [("commerce", 2), ("depict", 1)]
    assert_quiet_and_clean(dev)


# serve and worker --------------------------------------------------------------------------------


def parse_json_lines(running: Running) -> list[dict]:
    records = []
    for line in running.lines():
        record = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message", "process"} <= set(record), record
        records.append(record)
    return records


@pytest.mark.parametrize(("how", "log_format"), [("group", "text"), ("main", "json")], ids=["ctrl-c-text", "sigint-main-json"])
def test_serve_stops_cleanly_and_removes_its_metrics_folder(tmp_path, config_file, redis_url, how, log_format):
    """`collector serve` (gunicorn) stops on SIGINT with no traceback, and removes the metrics folder it made."""
    port = free_port()
    argv = ["serve", "--config", str(config_file), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    with started(tmp_path, [*argv, "--log-format", log_format], {"REDIS_URL": redis_url}) as serve:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), serve, "answer from /healthz")
        made = [path.name for path in serve.tmpdir.iterdir()]
        assert len(made) == 1 and made[0].startswith("collector-metrics-"), made
        stop(serve, how)
    assert_quiet_and_clean(serve)
    if log_format == "json":
        records = parse_json_lines(serve)
        assert any(record["logger"].startswith("gunicorn") for record in records), "gunicorn's own lines are JSON too"
    else:
        assert re.search(r"^\S+ \S+ INFO \S+\[\d+\] gunicorn\.error: Starting gunicorn", serve.output(), re.MULTILINE), serve.output()


@pytest.mark.parametrize(("how", "log_format"), [("group", "json"), ("main", "text")], ids=["ctrl-c-json", "sigint-main-text"])
def test_worker_stops_cleanly(tmp_path, config_file, redis_url, how, log_format):
    """`collector worker` stops on SIGINT with no traceback and no error, in either log format."""
    with started(tmp_path, ["worker", "--config", str(config_file), "--log-format", log_format], {"REDIS_URL": redis_url}) as worker:
        wait_until(lambda: worker.output().count("Listening on") >= 2, worker, "both delivery processes listening")
        time.sleep(0.5)  # and their schedulers started
        stop(worker, how)
    assert_quiet_and_clean(worker)
    if log_format == "json":
        records = parse_json_lines(worker)
        assert {record["process"] for record in records} >= {worker.process.pid}
        assert {"deliver-depict", "deliver-commerce"} <= {record.get("process_name") for record in records}
        assert records[-1]["message"] == "worker stopped"
    else:
        assert worker.lines()[-1].endswith("collector: worker stopped")


def test_json_log_lines_parse_and_carry_exceptions():
    """The JSON formatter: one object per record, the traceback in "exception", a URL's password masked."""
    from collector.observe.logs import JsonFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "redis://user:s3cret@host:6379 %s", ("down",), sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "ERROR" and entry["logger"] == "x" and "ValueError: boom" in entry["exception"]
    assert "s3cret" not in entry["message"] and entry["message"] == "redis://***@host:6379 down"


# warnings ----------------------------------------------------------------------------------------


def test_an_unreachable_redis_is_named_as_such_without_its_password(caplog):
    """Not "CONFIG GET is disabled?": the warning says the server cannot be reached, and why."""
    from redis import Redis

    port = free_port()
    url = f"redis://someone:s3cretpw@127.0.0.1:{port}/0"
    assert durability_warnings(Redis.from_url(url, socket_connect_timeout=1)) == [
        f"cannot reach Redis at 127.0.0.1:{port}: connection refused"
    ]
    with caplog.at_level(logging.WARNING, logger="collector"):
        warn_about_durability(url)
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert f"cannot reach Redis at 127.0.0.1:{port}: connection refused" in logged and "s3cretpw" not in logged


def test_serve_names_an_unreachable_redis(tmp_path, config_file):
    """The same warning from `collector serve` itself, then a clean stop."""
    redis_port, port = free_port(), free_port()
    argv = ["serve", "--config", str(config_file), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with started(tmp_path, argv, {"REDIS_URL": f"redis://:s3cretpw@127.0.0.1:{redis_port}/0"}) as serve:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), serve, "answer from /healthz")
        stop(serve, "group")
    assert f"WARNING MainProcess[{serve.process.pid}] collector: cannot reach Redis at 127.0.0.1:{redis_port}: connection refused" in serve.output()
    assert "s3cretpw" not in serve.output()
    assert_quiet_and_clean(serve)
