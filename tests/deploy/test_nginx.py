"""The shipped nginx configuration (``deploy/nginx/collector.conf``) in front of `collector serve`.

Debian's real ``nginx`` runs the shipped file, changed only where a test
must: its ports become free ports on 127.0.0.1 (the IPv6 ``listen`` lines
go), its certificate paths a self-signed certificate made here with
``openssl``, its upstream the collector's port, and the shop's placeholder
``root`` a folder with the test pages. The host names stay as shipped;
Chromium resolves ``my-store.example`` and ``collect.my-store.example`` to
127.0.0.1 (``--host-resolver-rules``), httpx sends them as ``Host``.

Behind it, :class:`tests.stack.ServeStack` (gunicorn, a worker, Redis, the
vendor stand-ins) with ``trusted_proxy_hops = 1`` and the shop's https
origin, as ``docs/production.md`` tells an operator to configure it. nginx
opens its upstream connections from 127.0.0.2 (``proxy_bind``), so the
collector can only know the visitor's 127.0.0.1 from ``X-Forwarded-For``.

For both ways of serving the collector, the subdomain and the ``/_c/`` path
of the shop's host, it proves that the snippet loads over HTTPS in headless
Chromium and its automatic page view reaches Depict with the visitor's
address, that a forged ``X-Forwarded-For`` does not, that the visitor
cookie set through nginx is Secure and HttpOnly, that a server library's
batch of 110 KB passes, and that the console answers on the subdomain but
not under the shop's own origin.

Skipped when ``nginx`` or ``chromium`` is not installed. Everything started
here listens on 127.0.0.1 and is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from collector.storage.redis_server import free_port
from tests.chromium import CHROMIUM, STUB, chromium_available, chromium_from
from tests.conftest import ORIGIN, REPO, SERVER_WRITE_KEY, SITE
from tests.factories import make_event
from tests.stack import ServeStack, kill_if_alive
from tests.stack import config_toml as stack_config_toml
from tests.vendors import ReceivedRequest

SHIPPED_CONF = REPO / "deploy" / "nginx" / "collector.conf"
SHOP = "my-store.example"
COLLECT = "collect.my-store.example"
NGINX_SOURCE_ADDRESS = "127.0.0.2"  # nginx's side of its connections to the collector
VISITOR = "127.0.0.1"
FORGED = "6.6.6.6"
START_SECONDS = 15
CONSOLE_TOKEN = "console-token-behind-nginx-0123"
WAIT_SECONDS = 20


def _nginx_binary() -> str | None:
    """Debian's nginx, also when /usr/sbin is not on PATH (a user's shell)."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


NGINX = _nginx_binary()

pytestmark = [
    pytest.mark.skipif(NGINX is None, reason="needs Debian's nginx (apt-get install nginx)"),
    pytest.mark.skipif(not chromium_available(), reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)"),
]


@dataclass(frozen=True)
class Mode:
    """One way of serving the collector: where the page loads t.js from, and where that lands."""

    name: str
    host: str  # the Host the collector is reached under
    prefix: str  # the path in front of the collector's own paths

    def url(self, https_port: int, path: str) -> str:
        return f"https://{self.host}:{https_port}{self.prefix}{path}"


MODES = [Mode("subdomain", COLLECT, ""), Mode("path", SHOP, "/_c")]


# The shipped values the test replaces; each must be found, so an edit to the shipped file that
# moves one of them fails here instead of leaving it untested.
def _replacements(https_port: int, http_port: int, collector_port: int, tls: Path, site_root: Path) -> list[tuple[str, str]]:
    return [
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("listen [::]:443 ssl http2;", "# (IPv6 listen removed by the test)"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:80;", "# (IPv6 listen removed by the test)"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{collector_port};"),
        (f"/etc/letsencrypt/live/{COLLECT}/", f"{tls}/"),
        (f"/etc/letsencrypt/live/{SHOP}/", f"{tls}/"),
        ("root /var/www/my-store;", f"root {site_root};"),
    ]


def shipped_conf_for_test(https_port: int, http_port: int, collector_port: int, tls: Path, site_root: Path) -> str:
    text = SHIPPED_CONF.read_text()
    for old, new in _replacements(https_port, http_port, collector_port, tls, site_root):
        assert old in text, f"{SHIPPED_CONF} no longer contains {old!r}; update the test's replacements"
        text = text.replace(old, new)
    return text


def main_conf(tmp: Path, user_root: bool) -> str:
    """What /etc/nginx/nginx.conf would be, all paths in ``tmp``; it includes the (substituted) shipped file."""
    temp_paths = "\n".join(f"    {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
{"user root;" if user_root else ""}
worker_processes 1;
pid {tmp / "nginx.pid"};
error_log {tmp / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    types {{ text/html html; }}
    default_type application/octet-stream;
    log_format with_host '$host "$request" $status';
    access_log {tmp / "access.log"} with_host;
{temp_paths}
    proxy_bind {NGINX_SOURCE_ADDRESS};
    include {tmp / "collector.conf"};
}}
"""


def make_certificate(tls: Path) -> None:
    """A self-signed certificate for the shop and its subdomains, as fullchain.pem and privkey.pem."""
    tls.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl", "req", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-days", "2", "-subj", f"/CN={SHOP}", "-addext", f"subjectAltName=DNS:{SHOP},DNS:*.{SHOP}",
            "-keyout", str(tls / "privkey.pem"), "-out", str(tls / "fullchain.pem"),
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def page(script_src: str) -> str:
    """A shop page with the two tags of the README."""
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>shop</title><link rel=icon href='data:,'>"
        f'<script async src="{script_src}" data-site="{SITE}"></script><script>{STUB}</script>'
        "</head><body><p>a shop page</p></body></html>"
    )


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    https_port: int
    http_port: int
    tmp: Path

    @property
    def access_log(self) -> str:
        path = self.tmp / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def error_log(self) -> str:
        path = self.tmp / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "<no error log>"


def _stop_nginx(process: subprocess.Popen[bytes]) -> None:
    """SIGQUIT (graceful), then SIGTERM, then SIGKILL to the master we started; its workers go with it."""
    workers = []
    try:
        workers = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        pass
    for sig, wait in ((signal.SIGQUIT, 5), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            break
        process.send_signal(sig)
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    for worker in workers:
        kill_if_alive(worker)


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    """nginx's HTTPS and HTTP ports, known before the collector's config is written (the origin has the port)."""
    return free_port(), free_port()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, ports: tuple[int, int]) -> Iterator[ServeStack]:
    """`collector serve` + worker, trusting one proxy hop, for pages of the shop's https origin."""
    shop_origin = f"https://{SHOP}:{ports[0]}"

    def behind_nginx(depict_url: str, commerce_url: str) -> str:
        text = stack_config_toml(depict_url, commerce_url)
        assert text.count("[collector]\n") == 1 and f'"{ORIGIN}"' in text
        text = text.replace("[collector]\n", "[collector]\ntrusted_proxy_hops = 1\n").replace(f'"{ORIGIN}"', f'"{shop_origin}"')
        return text + f'\n[console]\ntoken = "{CONSOLE_TOKEN}"\n'

    with ServeStack(tmp_path_factory.mktemp("behind-nginx"), make_config=behind_nginx) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, ports: tuple[int, int], stack: ServeStack) -> Iterator[Nginx]:
    """Debian's nginx on the shipped configuration, started in the foreground and stopped by its PID."""
    assert NGINX is not None
    tmp = tmp_path_factory.mktemp("nginx")
    https_port, http_port = ports
    tls, site_root = tmp / "tls", tmp / "site"
    make_certificate(tls)
    site_root.mkdir()
    (site_root / "subdomain.html").write_text(page(f"https://{COLLECT}:{https_port}/t.js"))
    (site_root / "path.html").write_text(page("/_c/t.js"))
    (tmp / "collector.conf").write_text(shipped_conf_for_test(https_port, http_port, stack.port, tls, site_root))
    (tmp / "nginx.conf").write_text(main_conf(tmp, user_root=os.geteuid() == 0))
    command = [NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, f"nginx -t refused the shipped configuration:\n{checked.stderr}"

    process = subprocess.Popen([*command, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server = Nginx(process, https_port, http_port, tmp)
    try:
        _wait_for_nginx(server)
        yield server
    finally:
        _stop_nginx(process)


def _wait_for_nginx(server: Nginx) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"nginx exited with {server.process.returncode}:\n{server.error_log()}")
        try:
            answer = httpx.get(f"https://127.0.0.1:{server.https_port}/readyz", headers={"Host": COLLECT}, verify=False, timeout=2)
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"nginx did not proxy /readyz within {START_SECONDS} s:\n{server.error_log()}")


@pytest.fixture(scope="module")
def browser(playwright_driver: Any) -> Iterator[Any]:
    """Headless Debian Chromium that resolves the shop's names to 127.0.0.1."""
    rules = f"--host-resolver-rules=MAP {SHOP} {VISITOR},MAP *.{SHOP} {VISITOR}"
    with chromium_from(playwright_driver, rules) as launched:
        yield launched


@pytest.fixture
def depict(stack: ServeStack):
    stack.depict.clear()
    return stack.depict


def depict_events(requests: list[ReceivedRequest]) -> list[tuple[ReceivedRequest, dict[str, Any]]]:
    return [(request, event) for request in requests if isinstance(request.json, list) for event in request.json if isinstance(event, dict)]


def wait_for_depict_event(depict, predicate, what: str) -> tuple[ReceivedRequest, dict[str, Any]]:
    found: list[tuple[ReceivedRequest, dict[str, Any]]] = []

    def arrived(requests: list[ReceivedRequest]) -> bool:
        found[:] = [(r, e) for r, e in depict_events(requests) if 200 <= r.status < 300 and predicate(e)]
        return bool(found)

    depict.wait_for(arrived, timeout=WAIT_SECONDS)
    assert len(found) == 1, f"{what} reached Depict {len(found)} times"
    return found[0]


def test_the_shipped_config_replaces_x_forwarded_for() -> None:
    """Both modes' locations set X-Forwarded-For to nginx's own view of the client; none appends to it.

    The locations nested in them (``/v1/``, with its larger body limit) set
    no header of their own, so they inherit every one of their parent's.
    """
    text = SHIPPED_CONF.read_text()
    directives = "\n".join(line.split("#")[0].strip() for line in text.splitlines())
    assert "$proxy_add_x_forwarded_for" not in directives
    replaced = [line for line in directives.splitlines() if line == "proxy_set_header X-Forwarded-For $remote_addr;"]
    assert len(replaced) == 2
    nested = re.findall(r"location [^{]*\{[^{}]*\}", directives)
    proxied = [block for block in nested if "proxy_pass" in block]
    assert len(proxied) == 4 and not any("proxy_set_header" in block for block in proxied), proxied
    assert "trusted_proxy_hops = 1" in text


def test_the_shipped_config_passes_renamed_paths_on() -> None:
    """No location names a renamable path (snippet, collect, site settings): each form passes all it holds to the
    collector, so renaming one needs no edit. The only others are the fixed /v1/ paths (a larger body limit) and /metrics."""
    directives = "\n".join(line.split("#")[0] for line in SHIPPED_CONF.read_text().splitlines())
    locations = sorted(re.findall(r"location\s+(=\s+)?(\S+)\s*\{", directives))
    fixed = [("", f"{prefix}{path}") for prefix in ("/", "/_c/") for path in ("beacon/v1/", "v1/")]
    assert locations == sorted([("", "/"), ("", "/_c/"), ("= ", "/_c/metrics"), ("= ", "/metrics"), *fixed]), locations


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: mode.name)
def test_the_snippet_loads_over_https_and_its_page_view_reaches_depict(mode: Mode, nginx: Nginx, browser: Any, depict) -> None:
    """A shop page over HTTPS loads t.js through nginx; the page view arrives at Depict with the visitor's address."""
    page_url = f"https://{SHOP}:{nginx.https_port}/{mode.name}.html"
    context = browser.new_context(ignore_https_errors=True)
    try:
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.goto(page_url, wait_until="load")
        tab.wait_for_function("window.collector && 'errors' in window.collector", timeout=WAIT_SECONDS * 1000)

        request, event = wait_for_depict_event(depict, lambda e: e.get("type") == "page_view" and e.get("url") == page_url, "the page view")
        assert request.headers.get("x-forwarded-for") == VISITOR, request.headers
        assert request.headers.get("x-forwarded-host") == mode.host, request.headers

        cookies = [cookie for cookie in context.cookies() if cookie["name"] == "_cid"]
        assert len(cookies) == 1, context.cookies()
        (cookie,) = cookies
        assert cookie["domain"] == mode.host
        assert cookie["secure"] is True and cookie["httpOnly"] is True, cookie
        assert tab.evaluate("window.collector.errors") == 0 and not errors, errors
    finally:
        context.close()

    log = nginx.access_log  # one line a request: host "request line" status
    for method, path, status in (("GET", "/t.js", "200"), ("GET", f"/sites/{SITE}/settings.json", "200"), ("POST", "/collect", "202")):
        line = f'{re.escape(mode.host)} "{method} {re.escape(mode.prefix + path)} HTTP/[0-9.]+" {status}'
        assert re.search(line, log), f"no {line!r} in nginx's access log:\n{log}"


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: mode.name)
def test_a_forged_x_forwarded_for_does_not_reach_depict(mode: Mode, nginx: Nginx, depict) -> None:
    """A client's own X-Forwarded-For is replaced by nginx: Depict gets the address nginx saw."""
    event = make_event("page_view", url=f"https://{SHOP}/forged-{mode.name}")
    with httpx.Client(verify=False, timeout=10) as client:
        answer = client.post(
            f"https://127.0.0.1:{nginx.https_port}{mode.prefix}/collect",
            content=json.dumps({"site": SITE, "events": [event]}),
            headers={
                "Host": mode.host,
                "Origin": f"https://{SHOP}:{nginx.https_port}",
                "Content-Type": "text/plain;charset=UTF-8",
                "X-Forwarded-For": FORGED,
                "User-Agent": "test_nginx",
            },
        )
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 1

    set_cookie = answer.headers.get("set-cookie", "")
    attributes = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")}
    assert set_cookie.startswith("_cid=") and {"secure", "httponly"} <= attributes, set_cookie

    request, _ = wait_for_depict_event(depict, lambda e: e.get("deduplication_id") == event["id"], "the forged request's event")
    assert request.headers.get("x-forwarded-for") == VISITOR, request.headers
    assert FORGED not in json.dumps(request.headers) and FORGED.encode() not in request.body


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: mode.name)
def test_plain_http_is_redirected_and_metrics_stay_private(mode: Mode, nginx: Nginx) -> None:
    """HTTP answers a redirect to the same URL over HTTPS; /metrics is not served on the public host."""
    answer = httpx.get(f"http://127.0.0.1:{nginx.http_port}{mode.prefix}/t.js", headers={"Host": mode.host}, timeout=5)
    assert answer.status_code == 301
    assert answer.headers["location"] == f"https://{mode.host}{mode.prefix}/t.js"

    with httpx.Client(verify=False, timeout=5, headers={"Host": mode.host}) as client:
        assert client.get(f"https://127.0.0.1:{nginx.https_port}{mode.prefix}/metrics").status_code == 404
        snippet = client.get(f"https://127.0.0.1:{nginx.https_port}{mode.prefix}/t.js")
        assert snippet.status_code == 200 and snippet.headers["content-type"].startswith("application/javascript")
        assert re.fullmatch(r'"[0-9a-f]{32}(-gz)?"', snippet.headers["etag"])


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: mode.name)
def test_a_server_librarys_default_batch_passes_nginx(mode: Mode, nginx: Nginx) -> None:
    """segment-analytics-python's default batch (100 messages, about 110 KB) passes nginx's /v1/ limit, and the collector takes it."""
    batch = [
        {"type": "track", "event": "Product Added", "userId": f"user-{n}", "messageId": f"nginx-{mode.name}-{n:04d}",
         "properties": {"product_id": f"P{n}", "description": "x" * 1000}, "context": {"ip": "203.0.113.7"}}
        for n in range(100)
    ]  # fmt: skip
    body = json.dumps({"batch": batch}).encode()
    assert len(body) > 100 * 1024
    with httpx.Client(verify=False, timeout=10) as client:
        answer = client.post(
            f"https://127.0.0.1:{nginx.https_port}{mode.prefix}/v1/batch",
            content=body,
            auth=(SERVER_WRITE_KEY, ""),
            headers={"Host": mode.host, "Content-Type": "application/json"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 100


def test_the_console_is_on_the_subdomain_and_not_under_the_shops_origin(nginx: Nginx) -> None:
    """Under /_c/ of the shop's host the collector answers but its console is the collector's 404; on collect. it logs in."""
    shop, subdomain = MODES[1], MODES[0]
    with httpx.Client(verify=False, timeout=10) as client:
        for path in ("/console/", "/console/login", "/console/api/summary", "/console/static/console.css"):
            answer = client.get(f"https://127.0.0.1:{nginx.https_port}{shop.prefix}{path}", headers={"Host": shop.host})
            assert answer.status_code == 404 and answer.json()["error"]["code"] == 404, (path, answer.text[:200])
        login = client.post(f"https://127.0.0.1:{nginx.https_port}{shop.prefix}/console/login", data={"token": CONSOLE_TOKEN},
                            headers={"Host": shop.host})  # fmt: skip
        assert login.status_code == 404 and "set-cookie" not in login.headers
        assert client.get(f"https://127.0.0.1:{nginx.https_port}{shop.prefix}/t.js", headers={"Host": shop.host}).status_code == 200

        login = client.post(f"https://127.0.0.1:{nginx.https_port}/console/login", data={"token": CONSOLE_TOKEN},
                            headers={"Host": subdomain.host})  # fmt: skip
        assert login.status_code == 303 and login.headers["set-cookie"].startswith("collector_console=")
        assert "Secure" in login.headers["set-cookie"] and "Path=/console" in login.headers["set-cookie"]
