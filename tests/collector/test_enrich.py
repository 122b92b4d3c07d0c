"""Facts taken from the request: the IP through trusted proxies, UA, Referer, host, visitor cookie."""

from __future__ import annotations

import pytest
from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

from collector.enrich import context_from_request, visitor_id_for


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
    assert context_for({"Sec-GPC": "1"}).global_privacy_control
    assert not context_for({}).global_privacy_control
