"""Facts taken from the request: the IP through trusted proxies, UA, Referer, host, visitor cookie."""

from __future__ import annotations

import pytest
from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

from collector.inbound.enrich import (
    context_from_request,
    forwardable_host,
    forwardable_ip,
    forwardable_url,
    forwardable_user_agent,
    global_privacy_control,
    visitor_id_for,
)


def context_for(headers: dict[str, str], hops: int = 0, cookie: str | None = None, anonymous_id: str | None = None):
    app = Flask(__name__)
    captured = {}

    @app.post("/collect")
    def view():
        captured["context"] = context_from_request(request, "_cid", anonymous_id)
        return ""

    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    client = app.test_client()
    if cookie:
        client.set_cookie("_cid", cookie, domain="localhost")
    client.post("/collect", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    return captured["context"]


def test_without_trusted_hops_forwarded_headers_are_ignored():
    """A visitor cannot forge the IP or host we pass on by sending X-Forwarded-* themselves."""
    context = context_for({"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Host": "evil.example"})
    assert context.client_ip == "10.0.0.9"
    assert context.host == "localhost"


@pytest.mark.parametrize(
    "hops, forwarded_for, expected",
    [
        (1, "198.51.100.1", "198.51.100.1"),
        (1, "6.6.6.6, 198.51.100.1", "198.51.100.1"),
        (2, "6.6.6.6, 198.51.100.1, 10.0.0.2", "198.51.100.1"),
    ],
)
def test_trusted_hops_pick_the_address_the_outermost_proxy_saw(hops, forwarded_for, expected):
    """With N trusted proxies the client IP is the N-th address from the right."""
    forwarded_host = ", ".join(["collect.shop.example"] + ["lb.internal"] * (hops - 1))
    context = context_for({"X-Forwarded-For": forwarded_for, "X-Forwarded-Host": forwarded_host}, hops=hops)
    assert context.client_ip == expected
    assert context.host == "collect.shop.example"


def test_depict_headers_come_from_the_request():
    """Depict gets the browser's Referer, User-Agent and the resolved IP and host."""
    context = context_for({"User-Agent": "Mozilla/5.0 Test", "Referer": "https://shop.example/p/1"})
    assert context.depict_headers() == {
        "X-Forwarded-For": "10.0.0.9",
        "X-Forwarded-Host": "localhost",
        "User-Agent": "Mozilla/5.0 Test",
        "Referer": "https://shop.example/p/1",
    }


def test_a_referer_that_is_not_a_web_url_is_not_passed_on():
    """Only http(s) referrers are forwarded; the Origin stands in otherwise."""
    context = context_for({"Referer": "javascript:alert(1)", "Origin": "https://shop.example"})
    assert context.referer == "https://shop.example"


def test_the_server_cookie_wins_over_the_snippet_id():
    """The HttpOnly cookie, which Safari does not cap at 7 days, is the visitor's identity."""
    assert visitor_id_for("cookie_id_1234", "snippet_id_5678") == ("cookie_id_1234", True)
    assert visitor_id_for(None, "snippet_id_5678") == ("snippet_id_5678", False)
    fresh, from_cookie = visitor_id_for("bad value!", "x")
    assert len(fresh) >= 16 and not from_cookie


def test_gpc_header_is_seen():
    """Sec-GPC: 1 marks the request as opted out."""
    app = Flask(__name__)
    with app.test_request_context(headers={"Sec-GPC": "1"}):
        assert global_privacy_control(request)
    with app.test_request_context():
        assert not global_privacy_control(request)


@pytest.mark.parametrize(
    ("sent", "passed_on"),
    [
        ("Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("Mozilla/5.0 (caf\xe9)", "Mozilla/5.0 (caf)"),  # a Latin-1 byte, as WSGI hands it over
        ("Mozilla/5.0 (caf\xc3\xa9)", "Mozilla/5.0 (caf)"),  # UTF-8 bytes, as WSGI hands them over
        ("Mozilla\x00/5.0\x7f", "Mozilla/5.0"),
        ("\xe9\xe9", None),
        ("x" * 600, "x" * 512),
    ],
)
def test_user_agent_is_passed_on_as_printable_ascii(sent, passed_on):
    """Characters a header may not carry are dropped from the User-Agent passed on to Depict."""
    assert forwardable_user_agent(sent) == passed_on
    if passed_on:
        passed_on.encode("ascii")


@pytest.mark.parametrize(
    ("sent", "passed_on"),
    [
        ("https://shop.example/p?q=1#x", "https://shop.example/p?q=1#x"),
        ("https://shop.example/caf\xc3\xa9", "https://shop.example/caf%C3%A9"),
        ("https://shop.example/caf\xe9", "https://shop.example/caf%E9"),
        ("https://shop.example/a b", "https://shop.example/a%20b"),
        ("https://shop.example/\u2603", "https://shop.example/%E2%98%83"),  # not Latin-1: a test client's str
        ("https://shop.example/already%20encoded", "https://shop.example/already%20encoded"),
        ("javascript:alert(1)", None),
    ],
)
def test_referer_is_passed_on_percent_encoded(sent, passed_on):
    """A Referer with bytes beyond ASCII is passed on as the same URL, percent-encoded."""
    assert forwardable_url(sent) == passed_on


def test_a_forged_host_or_address_is_not_passed_on():
    """Only a host name (with port) and a valid IP address go to Depict as X-Forwarded-Host/-For."""
    assert forwardable_host("collect.shop.example:8443") == "collect.shop.example:8443"
    assert forwardable_host("[::1]:8000") == "[::1]:8000"
    assert forwardable_host("evil\r\nX-Injected: 1") is None
    assert forwardable_host("caf\xe9.example") is None
    assert forwardable_ip("203.0.113.7") == "203.0.113.7"
    assert forwardable_ip("2001:db8::1") == "2001:db8::1"
    assert forwardable_ip("not-an-ip") is None
