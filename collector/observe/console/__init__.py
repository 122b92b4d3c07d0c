"""The site owner's console at ``/console/``: delivery chart, backlog, live tail, refusals, drops, dead letters.

It exists only when the configuration has ``[console] token``
(:func:`init_app`, called by ``create_app``); otherwise every ``/console/``
URL is the collector's JSON 404.

It is never served under a site's own origin. A page there (any script the
shop runs, its tag manager's included) could otherwise read the console
with the owner's session, which its cookie, scoped to the host and path,
would give it: the e-mails in the tail, the CSRF token, and with that the
dead letters' buttons. So a console URL whose host name, as the request
names it (``Host``) or as the trusted proxies report it
(``X-Forwarded-Host``), is the host name of any site's ``origins`` is the
same JSON 404 (whatever the port). With ``[console] host`` set it answers
on that host name only. The ``/_c/`` path of the shop's own host
(``deploy/nginx``) thus serves the collector but not its console, which is
reached on the collector's own host (``collect.``, ``127.0.0.1:8000``) or
the console host.

Two ways in, both checked against the token with :func:`hmac.compare_digest`:

- ``Authorization: Bearer <token>``, for scripts and probes. A wrong bearer
  token is a 401 in the collector's JSON error shape. Other schemes (a
  proxy's own ``Basic`` login in front of the console) are left alone.
- The login form (``/console/login``), which sets a session cookie:
  signed, HttpOnly, ``SameSite=Strict``, ``Secure`` when the request came
  over HTTPS, limited to ``/console``, valid for :data:`SESSION_LIFETIME`
  from the login (an open tab that refreshes itself does not extend it).
  The signing key is derived from the token (:func:`session_key`), so every
  gunicorn process agrees without another setting, and changing the token
  logs everybody out. The session is also kept in Redis (a digest of its
  random id, expiring with it), and logging out deletes it there: a copy
  of the cookie is worth nothing after the logout.

A browser without a session is sent to the login form; a script without a
bearer token gets the 401. The login form takes at most
:data:`~collector.config.defaults.CONSOLE_LOGIN_ATTEMPTS` posts per address (then
429 with ``Retry-After``), and every console URL counts against the
per-address ``rate_limit`` as ``/collect`` does (``collector/extensions.py``).

Every form that changes something (replay, purge, logout) is a POST that
carries the session's CSRF token, checked with :func:`hmac.compare_digest`;
without it the answer is 403 and nothing changes. A POST authenticated by
the bearer header needs no CSRF token: cross-site request forgery rides on
credentials the browser attaches by itself (cookies), and no browser adds
an ``Authorization`` header to a request another site makes it send (a
cross-origin ``fetch`` with one needs a CORS preflight, which the collector
never grants for ``/console/``). The login form has none either: forging a
login needs the token itself.

The token is never logged; the logs name who did what (``bearer`` or
``session``), never with what.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_limiter import RateLimitExceeded
from redis import RedisError
from werkzeug.exceptions import NotFound

from collector.config.defaults import CONSOLE_LOGIN_ATTEMPTS, DESTINATIONS, REDIS_KEY_PREFIX
from collector.config.schema import CollectorConfig, ConsoleSettings, host_name, origin_host_names
from collector.errors import BadRequest, CollectorError, error_body, error_response, rate_limit_refusal
from collector.extensions import collector_state, limit_for_this_process, limiter
from collector.observe.console import panels
from collector.observe.console.formatting import FILTERS

log = logging.getLogger(__name__)

PATH = "/console"
SESSION_COOKIE = "collector_console"
SESSION_LIFETIME = timedelta(hours=12)
SESSION_KEY_LABEL = b"collector console session signing key v1"
SESSION_KEY_PREFIX = REDIS_KEY_PREFIX + "console:session:"
REFRESH_SECONDS = 15  # the live panels' default; ``?refresh=N`` chooses (0: off)
MAX_REFRESH_SECONDS = 3600
API_MINUTES = 60
BEARER, SESSION = "bearer", "session"
_PUBLIC_ENDPOINTS = frozenset({"console.login", "console.static"})
_PRINTABLE_URL = re.compile(r"[\x21-\x7e]+")
LOGIN_LIMITED = f"too many login attempts from this address (at most {CONSOLE_LOGIN_ATTEMPTS}); retry after Retry-After seconds"
_API_ENDPOINTS = frozenset({"console.api_summary", "console.api_dead_letters"})
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

bp = Blueprint("console", __name__, url_prefix=PATH, template_folder="templates", static_folder="static")
for _name, _filter in FILTERS.items():
    bp.add_app_template_filter(_filter, _name)


class ConsoleUnauthorized(CollectorError):
    """No valid credentials for the console: a wrong bearer token, or neither a token nor a session."""

    code = 401
    message = "the console needs its token: log in at /console/login or send Authorization: Bearer <token>"

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": 'Bearer realm="collector console"'})


class CsrfRefused(CollectorError):
    """A form POST without the session's CSRF token (or with another one); nothing was changed."""

    code = 403
    message = "the form's CSRF token is missing or wrong; reload the console and try again"


def session_key(token: str) -> bytes:
    """The session signing key: HMAC-SHA256 of a fixed label, keyed with the console token."""
    return hmac.new(token.encode(), SESSION_KEY_LABEL, hashlib.sha256).digest()


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, for the console only.

    The cookie is scoped to ``/console``, HttpOnly, ``SameSite=Strict``, and
    ``Secure`` whenever the request itself is HTTPS (``ProxyFix`` resolves
    that behind the trusted proxies). Other URLs never read it: ``/collect``
    pays nothing for the console.
    """

    salt = "collector-console-session"

    def _console_path(self) -> str:
        return request.script_root + PATH

    def open_session(self, app: Flask, request: Any) -> Any:  # noqa: A002 - Flask's signature
        if request.path != PATH and not request.path.startswith(PATH + "/"):
            return self.session_class()
        return super().open_session(app, request)

    def get_cookie_name(self, app: Flask) -> str:
        return SESSION_COOKIE

    def get_cookie_path(self, app: Flask) -> str:
        return self._console_path()

    def get_cookie_domain(self, app: Flask) -> None:
        return None  # host-only: not shared with sibling domains

    def get_cookie_httponly(self, app: Flask) -> bool:
        return True

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure

    def get_cookie_samesite(self, app: Flask) -> str:
        return "Strict"


@dataclass(frozen=True)
class ConsoleHosts:
    """The host names the console answers on: ``only`` when set, and never one of ``sites``."""

    only: str | None
    sites: frozenset[str]

    def allow(self, trusted: str, received: str | None) -> bool:
        """``trusted``: the host name through the trusted proxies; ``received``: the ``Host`` header's behind them (else None)."""
        if trusted in self.sites or received in self.sites:
            return False
        return self.only is None or trusted == self.only


def console_hosts(config: CollectorConfig, settings: ConsoleSettings) -> ConsoleHosts:
    return ConsoleHosts(settings.host, frozenset().union(*(origin_host_names(site.origins) for site in config.sites.values())))


def init_app(app: Flask, settings: ConsoleSettings) -> None:
    """Turn the console on for ``app``: its session, its settings, its blueprint."""
    app.secret_key = session_key(settings.token)
    app.session_interface = ConsoleSessionInterface()
    app.permanent_session_lifetime = SESSION_LIFETIME
    app.extensions["collector_console"] = settings
    config = app.extensions["collector"].config
    app.extensions["collector_console_hosts"] = console_hosts(config, settings)
    app.extensions["collector_console_logins"] = limit_for_this_process(
        config.settings, int(app.config["COLLECTOR_PROCESSES"]), CONSOLE_LOGIN_ATTEMPTS
    )
    app.register_blueprint(bp)


def _settings() -> ConsoleSettings:
    return current_app.extensions["collector_console"]


def _host_names() -> tuple[str, str | None]:
    """The request's host name through the trusted proxies, and the one its ``Host`` header named (behind them)."""
    received = (request.environ.get("werkzeug.proxy_fix.orig") or {}).get("HTTP_HOST")
    return host_name(request.host), host_name(received) if received else None


def _is_token(candidate: str) -> bool:
    return hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), _settings().token.encode())


def _bearer_credential() -> str | None:
    """The credential of an ``Authorization: Bearer`` header; None when there is no such header."""
    scheme, _, credential = request.headers.get("Authorization", "").strip().partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else None


def _authenticate() -> str | None:
    """``bearer`` or ``session`` for a caller the console knows, None for an anonymous one; a wrong bearer is refused."""
    credential = _bearer_credential()
    if credential is not None:
        if not _is_token(credential):
            raise ConsoleUnauthorized()
        return BEARER
    return SESSION if _logged_in() else None


def _session_key(session_id: str) -> str:
    """Where Redis keeps a live session: a digest of its id, so that Redis holds nothing a cookie could be made from."""
    return SESSION_KEY_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def _logged_in() -> bool:
    """A session from the login form, younger than :data:`SESSION_LIFETIME` however often it was used since, not logged out."""
    since, session_id = session.get("since"), session.get("id")
    return (
        session.get("console") is True
        and bool(session.get("csrf"))
        and isinstance(since, (int, float))
        and 0 <= time.time() - since < SESSION_LIFETIME.total_seconds()
        and isinstance(session_id, str)
        and bool(collector_state().redis.exists(_session_key(session_id)))
    )


def _check_csrf() -> None:
    sent = request.form.get("csrf", "")
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode()):
        raise CsrfRefused()


@bp.before_request
def _never_on_a_sites_origin() -> None:
    """The JSON 404 of a console that is not there, on a site's own host (or off ``[console] host``)."""
    if not current_app.extensions["collector_console_hosts"].allow(*_host_names()):
        raise NotFound()


@bp.before_request
def _require_login() -> Response | None:
    if request.endpoint in _PUBLIC_ENDPOINTS:
        return None
    g.console_auth = _authenticate()
    if g.console_auth is None:
        if request.method in ("GET", "HEAD") and request.endpoint not in _API_ENDPOINTS:
            return redirect(url_for(".login", next=request.script_root + request.full_path.rstrip("?")))
        raise ConsoleUnauthorized()
    if request.method == "POST" and g.console_auth == SESSION:
        _check_csrf()
    return None


@bp.after_request
def _console_headers(response: Response) -> Response:
    response.headers.update(_SECURITY_HEADERS)
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
        response.vary.update(("Cookie", "Authorization"))
    return response


@bp.errorhandler(RateLimitExceeded)
def _rate_limited(_: RateLimitExceeded) -> tuple[Response, int, dict[str, str]]:
    """Over the per-address limit of the console's pages, or of login attempts (a stricter one)."""
    logging_in = request.endpoint == "console.login" and request.method == "POST"
    return error_response(rate_limit_refusal(LOGIN_LIMITED if logging_in else None))


@bp.errorhandler(RedisError)
def _redis_unavailable(error: RedisError) -> tuple[Response, int]:
    log.warning("console: redis did not answer: %s", type(error).__name__)
    return jsonify(error_body(503, "Redis did not answer; the console reads everything from it, retry later")), 503


# filters ---------------------------------------------------------------------


def _dead_letter_filter(values: Any) -> dict[str, Any]:
    """``site``, ``destination``, ``status`` and ``id`` from a query or a form; empty ones mean any."""
    destination = values.get("destination") or None
    if destination is not None and destination not in DESTINATIONS:
        raise BadRequest(f"destination must be one of {', '.join(DESTINATIONS)}")
    status = values.get("status") or None
    if status is not None:
        try:
            status = int(status)
        except ValueError:
            raise BadRequest("status must be an HTTP status such as 400") from None
    return {"site": values.get("site") or None, "destination": destination, "status": status, "delivery_id": values.get("id") or None}


def _query_of(chosen: dict[str, Any]) -> dict[str, Any]:
    """A filter as the dashboard's query string (no delivery id: after acting on one letter, show its neighbours)."""
    return {key: value for key, value in chosen.items() if value is not None and key != "delivery_id"}


# pages -----------------------------------------------------------------------


@bp.get("/")
def dashboard() -> str:
    state = collector_state()
    redis, config, now = state.redis, state.config, time.time()
    chosen = _dead_letter_filter(request.args)
    letters, matching = panels.dead_letter_rows(redis, **chosen)
    dead_counts = panels.dead_letter_counts(redis)
    backlog = panels.backlog_rows(redis, now)
    return render_template(
        "console/dashboard.html",
        now=now,
        hours_label=f"{_settings().hours:g}",
        charts=panels.charts(redis, config, _settings().hours, now),
        backlog=backlog,
        outboxes=panels.outbox_rows(redis),
        dead_counts=dead_counts,
        dead_total=sum(row["count"] for row in dead_counts),
        letters=letters,
        matching=matching,
        chosen=chosen,
        sites=sorted(config.sites),
        destinations=DESTINATIONS,
        tail=panels.live_tail(redis, config),
        refusals=panels.refusals(redis),
        dropped=panels.dropped_rows(redis, _chart_minutes(), now),
        drop_reasons=panels.DROP_REASONS,
        waiting=sum(row["outbox_entries"] for row in backlog),
        lag=max((row["lag_seconds"] for row in backlog), default=0.0),
        csrf=session.get("csrf", ""),
        via_session=g.console_auth == SESSION,
        refresh_seconds=_refresh_seconds(),
    )


def _chart_minutes() -> int:
    """The minutes the chart covers (``[console] hours``); the dropped events are counted over the same."""
    return panels.delivery_stats.minutes_for(_settings().hours)


def _refresh_seconds() -> int:
    chosen = request.args.get("refresh", type=int)
    if chosen is None:
        return REFRESH_SECONDS
    return max(0, min(chosen, MAX_REFRESH_SECONDS))


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a console page of this host, never elsewhere.

    Only printable ASCII without spaces passes, as in any URL sent on the
    wire: a line break (``%0d%0a``) would split the ``Location`` header.
    """
    home = url_for(".dashboard")
    if not target or not _PRINTABLE_URL.fullmatch(target):
        return home
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target or not (target + "/").startswith(request.script_root + PATH + "/"):
        return home
    return target


def _login_attempts() -> str:
    """What this process allows of :data:`~collector.config.defaults.CONSOLE_LOGIN_ATTEMPTS` per address."""
    return current_app.extensions["collector_console_logins"]


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_attempts, methods=["POST"])
def login() -> Any:
    """The login form; the token it takes is checked, never shown again, never logged."""
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if _logged_in():
            return redirect(target)
        return render_template("console/login.html", next=target, failed=False)
    if not _is_token(request.form.get("token", "")):
        log.warning("console: a login with a wrong token from %s", request.remote_addr)
        return render_template("console/login.html", next=target, failed=True)  # 200: a form to fill again, not a challenge
    session.clear()
    session.permanent = True
    session["console"] = True
    session["csrf"] = secrets.token_urlsafe(32)
    session["since"] = time.time()
    session["id"] = secrets.token_urlsafe(32)
    collector_state().redis.set(_session_key(session["id"]), 1, ex=int(SESSION_LIFETIME.total_seconds()))
    log.info("console: logged in from %s", request.remote_addr)
    return redirect(target, 303)


@bp.post("/logout")
def logout() -> Response:
    session_id = session.get("id")
    if isinstance(session_id, str):
        collector_state().redis.delete(_session_key(session_id))
    session.clear()
    return redirect(url_for(".login"), 303)


def _act_on_dead_letters(verb: str) -> Response | tuple[Response, int]:
    from worker.replay import purge_dead_letters, replay_dead_letters

    chosen = _dead_letter_filter(request.values)
    act = replay_dead_letters if verb == "replayed" else purge_dead_letters
    letters = act(collector_state().redis, **chosen)
    log.info(
        "console: %s %s %d dead letter(s) (site=%s destination=%s status=%s id=%s)",
        g.console_auth, verb, len(letters), chosen["site"], chosen["destination"], chosen["status"], chosen["delivery_id"],
    )  # fmt: skip
    if g.console_auth == BEARER:
        return jsonify({verb: len(letters), "deliveries": [letter.delivery["id"] for letter in letters]}), 200
    what = "requeued" if verb == "replayed" else "purged"
    flash(f"{what.capitalize()} {len(letters)} dead letter{'s' if len(letters) != 1 else ''}.")
    return redirect(url_for(".dashboard", **_query_of(chosen), _anchor="dead-letters"), 303)


@bp.post("/dead-letters/replay")
def replay() -> Any:
    """Put the matching dead letters back into their outboxes (``collector replay``)."""
    return _act_on_dead_letters("replayed")


@bp.post("/dead-letters/purge")
def purge() -> Any:
    """Delete the matching dead letters for good (``collector replay --purge``)."""
    return _act_on_dead_letters("purged")


# JSON for scripts and probes -----------------------------------------------------


@bp.get("/api/summary")
def api_summary() -> Response:
    """Backlog, lag, outboxes, dead letters, and events of the last ``minutes`` (default 60)."""
    state = collector_state()
    now = time.time()
    try:
        minutes = int(request.args.get("minutes", API_MINUTES))
    except ValueError:
        raise BadRequest("minutes must be a whole number") from None
    minutes = max(1, min(minutes, panels.delivery_stats.MINUTES_KEPT))
    dead = panels.dead_letter_counts(state.redis)
    return jsonify(
        {
            "generated_at": now,
            "backlog": panels.backlog_rows(state.redis, now),
            "outboxes": panels.outbox_rows(state.redis),
            "dead_letters": dead,
            "dead_letters_total": sum(row["count"] for row in dead),
            "events": {"minutes": minutes, "by_site_and_destination": panels.event_totals(state.redis, minutes, now)},
            "dropped": {"minutes": minutes, "by_site_and_reason": panels.dropped_rows(state.redis, minutes, now)},
        }
    )


@bp.get("/api/dead-letters")
def api_dead_letters() -> Response:
    """The matching dead letters (``site``, ``destination``, ``status``, ``id``), newest first."""
    rows, matching = panels.dead_letter_rows(collector_state().redis, **_dead_letter_filter(request.args))
    return jsonify({"matching": matching, "dead_letters": rows})
