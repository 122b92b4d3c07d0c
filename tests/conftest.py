"""Shared fixtures: a real Redis, real vendor stand-ins, the app, and a live stack.

Redis is the server named by ``REDIS_URL``, or else an embedded
``redis-server`` the session starts and stops. Two databases keep the tests
apart: database 1 for tests that drive the app in-process (flushed before
each), database 0 for the live stack, whose worker process drains every
outbox it sees.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from werkzeug.serving import make_server

from collector import create_app
from collector.config.loading import load_config
from collector.config.schema import CollectorConfig
from collector.storage.redis_server import EmbeddedRedis
from tests.vendors import CommerceStandIn, DepictStandIn

REPO = Path(__file__).resolve().parents[1]
SPECS = Path(__file__).resolve().parent / "specs"
DEPICT_KEY = "test-depict-key"
COMMERCE_KEY = "test-commerce-key"
SITE = "test_store"
OTHER_SITE = "other_store"
CONSENT_SITE = "consent_store"
ORIGIN = "https://shop.example"
BROWSER_WRITE_KEY = "wk_browser_test_store"  # Segment/RudderStack write keys of test_store (collector/sources)
SERVER_WRITE_KEY = "wk_server_test_store"
CONSENT_WRITE_KEY = "wk_browser_consent_store"


def _with_db(url: str, db: int) -> str:
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/{db}"


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """A real Redis server: ``REDIS_URL`` when set, else an embedded one for the session."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """Database 1, emptied before the test."""
    url = _with_db(redis_server_url, 1)
    Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def redis_client(redis_url: str) -> Redis:
    return Redis.from_url(redis_url)


@pytest.fixture(scope="session")
def depict_server() -> Iterator[DepictStandIn]:
    with DepictStandIn(api_key=DEPICT_KEY) as server:
        yield server


@pytest.fixture(scope="session")
def commerce_server() -> Iterator[CommerceStandIn]:
    with CommerceStandIn(api_key=COMMERCE_KEY) as server:
        yield server


@pytest.fixture
def depict(depict_server: DepictStandIn) -> DepictStandIn:
    """The Depict stand-in, with no requests recorded and no faults scripted."""
    depict_server.clear()
    depict_server.reset_faults()
    depict_server.set_api_key(DEPICT_KEY)
    return depict_server


@pytest.fixture
def commerce(commerce_server: CommerceStandIn) -> CommerceStandIn:
    """The Commerce stand-in, with no requests recorded and no faults scripted."""
    commerce_server.clear()
    commerce_server.reset_faults()
    commerce_server.set_api_key(COMMERCE_KEY)
    return commerce_server


def config_toml(
    depict_url: str,
    commerce_url: str,
    web_events_per_request: int = 50,
    retry_for_seconds: int = 60,
    account_fields: tuple[str, ...] = ("id", "anonymousIds", "consumer", "lead"),
) -> str:
    """Three sites on the stand-ins: test_store (both vendors, generous budgets, whole Accounts allowed,
    Segment/RudderStack write keys), other_store (a wrong Commerce key, default budgets and account fields),
    consent_store (requires consent).

    Each keeps bots' events (``bots = "keep"``): the tests post with httpx, whose User-Agent
    (``python-httpx/...``) the bot list names. ``tests/collector/inbound/test_bots.py`` covers the default, "drop"."""
    allowed = ", ".join(f'"{name}"' for name in account_fields)
    return f"""
[collector]
rate_limit = "100000 per minute"

[collector.delivery]
timeout_seconds = 2
connect_timeout_seconds = 1
retry_base_seconds = 0.5
retry_max_interval_seconds = 2
retry_for_seconds = {retry_for_seconds}
deliveries_per_job = 20
concurrency = 16

[sites.{SITE}]
origins = ["{ORIGIN}"]
bots = "keep"

[sites.{SITE}.limits]
web_events_per_request = {web_events_per_request}
events_per_minute = 10000000
visitor_events_per_minute = 1000000

[sites.{SITE}.sources]
write_keys = ["{BROWSER_WRITE_KEY}"]
server_write_keys = ["{SERVER_WRITE_KEY}"]

[sites.{SITE}.depict]
url = "{depict_url}"
api_key = "${{TEST_DEPICT_KEY}}"
tenant = "test_tenant"
market = "se"

[sites.{SITE}.commerce]
url = "{commerce_url}"
api_key = "${{TEST_COMMERCE_KEY}}"
account_fields = [{allowed}]

[sites.{OTHER_SITE}]
bots = "keep"

[sites.{OTHER_SITE}.commerce]
url = "{commerce_url}"
api_key = "wrong-key"
events = ["User Login"]

[sites.{CONSENT_SITE}]
origins = ["{ORIGIN}"]
require_consent = true
bots = "keep"

[sites.{CONSENT_SITE}.sources]
write_keys = ["{CONSENT_WRITE_KEY}"]

[sites.{CONSENT_SITE}.commerce]
url = "{commerce_url}"
api_key = "${{TEST_COMMERCE_KEY}}"
"""


@pytest.fixture(scope="session")
def config_file(tmp_path_factory: pytest.TempPathFactory, depict_server: DepictStandIn, commerce_server: CommerceStandIn) -> Path:
    """A site config for two sites whose destinations are the stand-ins (other_store has a wrong key)."""
    os.environ.setdefault("TEST_DEPICT_KEY", DEPICT_KEY)
    os.environ.setdefault("TEST_COMMERCE_KEY", COMMERCE_KEY)
    path = tmp_path_factory.mktemp("config") / "collector.toml"
    path.write_text(config_toml(depict_server.url, commerce_server.url))
    return path


@pytest.fixture(scope="session")
def site_config(config_file: Path) -> CollectorConfig:
    return load_config(config_file)


@pytest.fixture
def app(site_config: CollectorConfig, redis_url: str):
    return create_app({"COLLECTOR_CONFIG": site_config, "REDIS_URL": redis_url, "TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


@dataclass
class CollectorDev:
    """A running `collector dev` (demo site), started by :func:`running_collector_dev`."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def running_collector_dev(log: Path) -> Iterator[CollectorDev]:
    """`collector dev` with no config, as a newcomer runs it, in its own process group, its output in ``log``.

    It is up once /readyz answers; on the way out it gets Ctrl-C as a user
    would give it, and only if it does not exit, SIGTERM and SIGKILL to the group.
    """
    from collector.storage.redis_server import free_port

    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "COLLECTOR_CONFIG")}
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "collector", "dev", "--port", str(port)],
            cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    dev = CollectorDev(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_until_ready(dev)
        yield dev
    finally:
        stop_process_group(process)


def _wait_until_ready(dev: CollectorDev, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and dev.process.poll() is None:
        try:
            with urllib.request.urlopen(f"{dev.url}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"collector dev did not come up within {seconds} s:\n{dev.log.read_text(errors='replace')[-3000:]}")


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to the group we started; if it does not exit, SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def delivery_process_pid(redis: Redis, supervisor_pid: int, destination: str) -> int:
    """The live delivery process of a `collector worker` that works ``destination``'s queue.

    RQ's registry can still list a worker whose process is gone, so only the
    supervisor's living children count.
    """
    import psutil
    from rq import Worker

    from worker.dispatch import delivery_queue

    children = {child.pid for child in psutil.Process(supervisor_pid).children()}
    pids = [worker.pid for worker in Worker.all(connection=redis, queue=delivery_queue(redis, destination)) if worker.pid in children]
    assert len(pids) == 1, f"expected one live {destination} process, found {pids}"
    return pids[0]


@dataclass
class LiveStack:
    url: str
    redis_url: str
    depict: DepictStandIn
    commerce: CommerceStandIn
    site: str = SITE
    worker_pid: int | None = None


def _start_worker(config_file: Path, redis_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "collector", "worker", "--config", str(config_file)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def live_stack_session(
    redis_server_url: str, config_file: Path, site_config: CollectorConfig, depict_server: DepictStandIn, commerce_server: CommerceStandIn
) -> Iterator[LiveStack]:
    """The collector on a real HTTP port and a `collector worker` process, both on database 0."""
    redis_url = _with_db(redis_server_url, 0)
    Redis.from_url(redis_url).flushdb()
    app = create_app({"COLLECTOR_CONFIG": site_config, "REDIS_URL": redis_url})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    worker = _start_worker(config_file, redis_url)
    try:
        yield LiveStack(
            url=f"http://127.0.0.1:{server.server_port}",
            redis_url=redis_url,
            depict=depict_server,
            commerce=commerce_server,
            worker_pid=worker.pid,
        )
    finally:
        server.shutdown()
        worker.terminate()
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)


@pytest.fixture
def live_stack(live_stack_session: LiveStack, depict: DepictStandIn, commerce: CommerceStandIn) -> LiveStack:
    """The live stack with the stand-ins' records and faults cleared."""
    return live_stack_session


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Any]:
    """The session's one Playwright driver (browser tests and the nginx test launch their Chromium from it)."""
    from tests.chromium import CHROMIUM, chromium_available

    if not chromium_available():
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture
def run_async() -> Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]:
    """Runs a coroutine to its end on a new event loop in a thread of its own, and returns its result.

    Playwright's sync API, once a browser test ran, leaves an event loop
    marked running in the main thread, where ``asyncio.run`` then refuses.
    """

    def run(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        with ThreadPoolExecutor(max_workers=1) as thread:
            return thread.submit(lambda: asyncio.run(make())).result(timeout=60)

    return run


FAULT_FIGURES = pytest.StashKey[list]()


@pytest.fixture
def fault_figures(request: pytest.FixtureRequest) -> list[dict]:
    """Rows of the fault-scenario table printed at the end of the run."""
    return request.config.stash.setdefault(FAULT_FIGURES, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    rows = config.stash.get(FAULT_FIGURES, [])
    if not rows:
        return
    columns = list(rows[0])
    widths = {column: max(len(column), *(len(str(row[column])) for row in rows)) for column in columns}
    terminalreporter.section("fault scenarios")
    terminalreporter.write_line(" | ".join(column.ljust(widths[column]) for column in columns))
    for row in rows:
        terminalreporter.write_line(" | ".join(str(row[column]).ljust(widths[column]) for column in columns))
