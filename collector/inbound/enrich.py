"""Facts about the visitor taken from the HTTP request, not from the body.

The snippet cannot be trusted to say who it is talking for, so the client IP,
User-Agent, Referer and host come from the request the collector received.
``X-Forwarded-For``, ``-Host`` and ``-Proto`` are honoured only through the
configured number of trusted proxy hops: ``create_app`` wraps the app in
Werkzeug's ``ProxyFix`` with that count, so ``request.remote_addr`` and
``request.host`` are already the values the outermost trusted proxy saw.
With no trusted hops, what a browser puts in those headers is ignored, so a
visitor cannot forge the IP we pass on to Depict.

What is passed on to Depict as request headers must be valid in an HTTP
header, whatever the browser sent (a WSGI server hands us raw header bytes
decoded as Latin-1). The rule:

- ``User-Agent``: characters outside printable ASCII (space to ``~``) are
  dropped: ``Mozilla/5.0 (café)`` is passed on as ``Mozilla/5.0 (caf)``.
- ``Referer`` (a URL): the raw bytes outside printable ASCII, and spaces,
  are percent-encoded, as a browser encodes a URL: ``/café`` sent as UTF-8
  is passed on as ``/caf%C3%A9``.
- ``X-Forwarded-Host``: passed on only when it is a host name or address
  with an optional port; ``X-Forwarded-For``: only a valid IP address.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import string
import time
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

from flask import Request

from collector.config import defaults

VISITOR_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_USER_AGENT_LENGTH = 512
_HOST_PATTERN = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")
_HEADERS_REMEMBERED = 4096  # sanitised header values per function and process: visitors repeat a few User-Agents and pages
_URL_SAFE = string.punctuation  # with letters and digits, every printable ASCII character but space stays as it is


@dataclass(frozen=True)
class RequestContext:
    """What the collector knows about the browser that sent a batch."""

    client_ip: str | None
    user_agent: str | None
    referer: str | None
    host: str | None
    received_at: float
    visitor_id: str
    visitor_cookie_was_set: bool
    address: str | None = None  # the client's address as budgets count it (client_address); None for a backend's message

    def depict_headers(self) -> dict[str, str]:
        """The browser's headers as Depict wants them passed on (its spec's header parameters)."""
        headers = {}
        if self.client_ip:
            headers["X-Forwarded-For"] = self.client_ip
        if self.host:
            headers["X-Forwarded-Host"] = self.host
        if self.user_agent:
            headers["User-Agent"] = self.user_agent
        if self.referer:
            headers["Referer"] = self.referer
        return headers


def _raw_bytes(value: str) -> bytes:
    """The bytes the browser sent: WSGI decodes header bytes as Latin-1, a test client may not."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace")


@lru_cache(maxsize=_HEADERS_REMEMBERED)
def forwardable_user_agent(value: str | None) -> str | None:
    """Printable ASCII only, at most ``MAX_USER_AGENT_LENGTH`` characters; None when nothing is left."""
    if not value:
        return None
    kept = "".join(character for character in value if " " <= character <= "~").strip()
    return kept[:MAX_USER_AGENT_LENGTH] or None


@lru_cache(maxsize=_HEADERS_REMEMBERED)
def forwardable_url(value: str | None) -> str | None:
    """An http(s) URL with every byte outside printable ASCII percent-encoded; None for anything else."""
    if not value:
        return None
    url = quote(_raw_bytes(value), safe=_URL_SAFE)
    if url.startswith(("http://", "https://")) and len(url) <= defaults.MAX_STRING_LENGTH:
        return url
    return None


@lru_cache(maxsize=_HEADERS_REMEMBERED)
def forwardable_host(value: str | None) -> str | None:
    return value if value and _HOST_PATTERN.match(value) else None


@lru_cache(maxsize=_HEADERS_REMEMBERED)
def forwardable_ip(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(value or ""))
    except ValueError:
        return None


def client_address(address: str | None) -> str:
    """An address as the rate limit and the budgets count it: IPv4 as is, IPv6 by its /64.

    A household or a phone holds a whole IPv6 /64, so a page that rotates
    addresses inside it is still one client.
    """
    address = address or "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/{defaults.IPV6_RATE_LIMIT_PREFIX}", strict=False))
    return str(parsed)


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
    visitor_id, from_cookie = visitor_id_for(request.cookies.get(cookie_name), snippet_anonymous_id)
    return RequestContext(
        client_ip=forwardable_ip(request.remote_addr),
        user_agent=forwardable_user_agent(request.headers.get("User-Agent")),
        referer=forwardable_url(request.headers.get("Referer")) or forwardable_url(request.headers.get("Origin")),
        host=forwardable_host(request.host),
        received_at=time.time(),
        visitor_id=visitor_id,
        visitor_cookie_was_set=from_cookie,
        address=client_address(request.remote_addr),
    )


def global_privacy_control(request: Request) -> bool:
    """The browser's Global Privacy Control signal (``Sec-GPC: 1``)."""
    return request.headers.get("Sec-GPC") == "1"
