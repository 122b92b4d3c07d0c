"""`collector dev` with no config: the demo a newcomer sees within a minute."""

from __future__ import annotations

import json
from collections.abc import Iterator
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from collector.mapping.commerce import web_event_id
from tests.chromium import VISITOR_USER_AGENT
from tests.conftest import CollectorDev, running_collector_dev
from tests.factories import make_event

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[CollectorDev]:
    """`collector dev` as a user runs it: its own embedded Redis, its own worker, stopped by its PID."""
    with running_collector_dev(tmp_path / "collector-dev.log") as dev:
        yield dev


def test_dev_prints_the_url_and_serves_the_demo_page_with_the_snippet(dev_server):
    """The demo page loads /t.js for the demo site."""
    base = dev_server.url
    page = httpx.get(f"{base}/").text
    assert 'src="/t.js"' in page and 'data-site="demo"' in page
    assert httpx.get(f"{base}/t.js").status_code == 200


def test_an_event_travels_to_both_demo_destinations_spec_valid(dev_server):
    """An event posted as the snippet posts it shows up as a Depict and a Commerce request, valid."""
    base = dev_server.url
    event = make_event("add_to_cart", props={"product_id": "DEMO-1"})
    body = json.dumps({"site": "demo", "events": [event]})
    # a browser's User-Agent: the demo site drops bots, and httpx's own is one
    headers = {"Content-Type": "text/plain", "Origin": base, "User-Agent": VISITOR_USER_AGENT}
    answer = httpx.post(f"{base}/collect", content=body, headers=headers)
    assert answer.status_code == 202 and answer.json()["accepted"] == 1, answer.text
    deadline = time.monotonic() + 15
    seen: dict[str, dict] = {}
    while time.monotonic() < deadline and len(seen) < 2:
        for delivery in httpx.get(f"{base}/_demo/deliveries").json()["deliveries"]:
            body = delivery["body"]
            ids = [e.get("deduplication_id") for e in body] if isinstance(body, list) else [body.get("id")]
            if event["id"] in ids or web_event_id("demo", event["id"]) in ids:
                seen[delivery["destination"]] = delivery
        time.sleep(0.2)
    assert set(seen) == {"depict", "commerce"}
    assert seen["depict"]["spec_errors"] == [] and seen["commerce"]["spec_errors"] == []
    assert "demo-depict-key" not in str(seen["depict"]["headers"])


def test_dev_stops_its_embedded_redis_on_exit(dev_server):
    """Ctrl-C stops the collector, the worker and the embedded redis-server it started."""
    import psutil

    servers = [child.pid for child in psutil.Process(dev_server.process.pid).children() if "redis-server" in child.name()]
    assert len(servers) == 1, servers
    redis_pid = servers[0]
    dev_server.process.send_signal(signal.SIGINT)
    dev_server.process.wait(timeout=20)
    output = dev_server.log.read_text()
    assert f"open {dev_server.url}/" in output
    with pytest.raises(ProcessLookupError):
        os.kill(redis_pid, 0)
