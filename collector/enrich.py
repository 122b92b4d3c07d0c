"""Facts about the visitor taken from the HTTP request, not from the body.

The snippet cannot be trusted to say who it is talking for, so the client IP,
User-Agent, Referer and host come from the request the collector received.
``X-Forwarded-For``, ``-Host`` and ``-Proto`` are honoured only through the
configured number of trusted proxy hops: ``create_app`` wraps the app in
Werkzeug's ``ProxyFix`` with that count, so ``request.remote_addr`` and
``request.host`` are already the values the outermost trusted proxy saw.
With no trusted hops, what a browser puts in those headers is ignored, so a
visitor cannot forge the IP we pass on to Depict.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from flask import Request

from collector import defaults

VISITOR_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_USER_AGENT_LENGTH = 512


@dataclass(frozen=True)
class RequestContext:
    """What the collector knows about the browser that sent a batch."""

    client_ip: str
    user_agent: str | None
    referer: str | None
    host: str
    received_at: float
    visitor_id: str
    visitor_cookie_was_set: bool
    global_privacy_control: bool

    def depict_headers(self) -> dict[str, str]:
        """The browser's headers as Depict wants them passed on (its spec's header parameters)."""
        headers = {"X-Forwarded-For": self.client_ip, "X-Forwarded-Host": self.host}
        if self.user_agent:
            headers["User-Agent"] = self.user_agent
        if self.referer:
            headers["Referer"] = self.referer
        return headers


def _http_url(value: str | None) -> str | None:
    if value and value.startswith(("http://", "https://")) and len(value) <= defaults.MAX_STRING_LENGTH:
        return value
    return None


def new_visitor_id() -> str:
    return secrets.token_urlsafe(15)


def visitor_id_for(cookie_value: str | None, snippet_anonymous_id: str | None) -> tuple[str, bool]:
    """The visitor id and whether it came from our cookie.

    The server-set cookie wins: Safari caps storage that script sets at seven
    days, but not a cookie set by the site's own server. Without the cookie,
    the snippet's anonymous id is adopted so the visitor keeps one identity.
    """
    if cookie_value and VISITOR_ID_PATTERN.match(cookie_value):
        return cookie_value, True
    if snippet_anonymous_id and VISITOR_ID_PATTERN.match(snippet_anonymous_id):
        return snippet_anonymous_id, False
    return new_visitor_id(), False


def context_from_request(request: Request, cookie_name: str, snippet_anonymous_id: str | None) -> RequestContext:
    user_agent = request.headers.get("User-Agent")
    visitor_id, from_cookie = visitor_id_for(request.cookies.get(cookie_name), snippet_anonymous_id)
    return RequestContext(
        client_ip=request.remote_addr or "0.0.0.0",
        user_agent=user_agent[:MAX_USER_AGENT_LENGTH] if user_agent else None,
        referer=_http_url(request.headers.get("Referer")) or _http_url(request.headers.get("Origin")),
        host=request.host,
        received_at=time.time(),
        visitor_id=visitor_id,
        visitor_cookie_was_set=from_cookie,
        global_privacy_control=request.headers.get("Sec-GPC") == "1",
    )
