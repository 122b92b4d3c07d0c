"""The console at /console/: who gets in, what it shows, and what its buttons do, on a real Redis."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import tomllib

import pytest

from collector import create_app
from collector.config.loading import ConfigError, parse_config
from collector.config.schema import ConsoleSettings
from collector.storage.delivery_stats import JobFigures, record_job
from collector.storage.drop_stats import record_dropped
from collector.storage.outbox import decode_entry, outbox_key
from tests.conftest import ORIGIN, OTHER_SITE, SITE, config_toml
from tests.factories import make_delivery, make_event
from worker.dead_letters import DeadLetters
from worker.delivery import Attempt, Outcome

TOKEN = "console-token-for-the-tests-0123"
PERSON = "jane.doe@example.com"


@pytest.fixture
def console_app(site_config, redis_url):
    """The tests' sites with ``[console] token`` set."""
    config = dataclasses.replace(site_config, console=ConsoleSettings(token=TOKEN))
    return create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True})


@pytest.fixture
def console(console_app):
    return console_app.test_client()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def log_in(client) -> str:
    """Log in through the form; return the CSRF token the dashboard's forms carry."""
    answer = client.post("/console/login", data={"token": TOKEN})
    assert answer.status_code == 303, answer.data
    page = client.get("/console/")
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True)).group(1)


@pytest.fixture
def dead_letters(redis_client) -> DeadLetters:
    """Three dead letters: two 400s of test_store's Commerce, one 401 of other_store's Commerce."""
    letters = DeadLetters(redis_client)
    letters.add([Attempt(make_delivery(SITE, "commerce", n), Outcome.DEAD, status=400, answer='{"error": "bad"}') for n in (1, 2)], 1)
    letters.add([Attempt(make_delivery(OTHER_SITE, "commerce", 3), Outcome.DEAD, status=401, answer="Unauthorized")], 3)
    return letters


def requeued(redis_client, site: str = SITE, destination: str = "commerce") -> list[str]:
    """The ids of the deliveries waiting in an outbox."""
    return [d["id"] for entry in redis_client.lrange(outbox_key(site, destination), 0, -1) for d in decode_entry(entry)]


# configuration ------------------------------------------------------------------


def console_toml(table: str) -> dict:
    return tomllib.loads(config_toml("http://127.0.0.1:9/d", "http://127.0.0.1:9/c") + "\n" + table)


ENV = {"TEST_DEPICT_KEY": "d", "TEST_COMMERCE_KEY": "c"}


def test_console_token_comes_from_the_environment_and_hours_default_to_three():
    """``token = "${CONSOLE_TOKEN}"`` is read from the environment; the chart covers 3 hours unless told."""
    config = parse_config(console_toml('[console]\ntoken = "${CONSOLE_TOKEN}"\n'), {**ENV, "CONSOLE_TOKEN": TOKEN})
    assert config.console == ConsoleSettings(token=TOKEN, hours=3.0)
    assert TOKEN not in repr(config)


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("[console]\n", "console.token: Missing data for required field."),
        ('[console]\ntoken = ""\n', "console.token: must be at least 16 characters"),
        ('[console]\ntoken = "too-short"\n', "console.token: must be at least 16 characters"),
        ('[console]\ntoken = "sixteen chars and a space"\n', "console.token: must be printable ASCII"),
        ('[console]\ntoken = "${UNSET_CONSOLE_TOKEN}"\n', "console.token: environment variable UNSET_CONSOLE_TOKEN is not set"),
        (f'[console]\ntoken = "{TOKEN}"\nhours = 7\n', "console.hours: Must be greater than or equal to 0.25"),
        (f'[console]\ntoken = "{TOKEN}"\npassword = "x"\n', "console.password: Unknown field."),
    ],
)
def test_a_console_table_without_a_usable_token_is_a_config_error(table, problem):
    """A present ``[console]`` table needs a token of 16+ printable characters; the problem names its key."""
    with pytest.raises(ConfigError) as error:
        parse_config(console_toml(table), ENV)
    assert any(line.startswith(problem) for line in error.value.problems), error.value.problems


# who gets in ----------------------------------------------------------------------


def test_the_console_is_not_found_when_no_token_is_configured(client):
    """Without ``[console]`` every console URL is the collector's JSON 404, even with a bearer token."""
    for path in ("/console/", "/console/login", "/console/api/summary"):
        answer = client.get(path, headers=bearer())
        assert answer.status_code == 404
        assert answer.json["error"]["code"] == 404
    assert client.post("/console/dead-letters/replay").status_code == 404


CONSOLE_URLS = ("/console/", "/console/login", "/console/api/summary", "/console/api/dead-letters", "/console/static/console.css")


def console_app_with(site_config, redis_url, hops: int = 0, host: str | None = None, rate_limit: str = "100000 per minute"):
    settings = dataclasses.replace(site_config.settings, trusted_proxy_hops=hops, rate_limit=rate_limit)
    config = dataclasses.replace(site_config, settings=settings, console=ConsoleSettings(token=TOKEN, host=host))
    return create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True})


def assert_not_found(answer) -> None:
    assert answer.status_code == 404 and answer.json["error"]["code"] == 404, answer.data[:200]
    assert "Set-Cookie" not in answer.headers


@pytest.mark.parametrize("base_url", ["https://shop.example/", "https://SHOP.example:8443/", "http://shop.example/_c/"])
def test_the_console_is_not_found_under_a_sites_origin(console, base_url):
    """On the host of a site's origin (any port, any path prefix) every console URL is the JSON 404, credentials or not."""
    for path in CONSOLE_URLS:
        assert_not_found(console.get(path, base_url=base_url, headers=bearer()))
        assert_not_found(console.get(path, base_url=base_url))
    assert_not_found(console.post("/console/login", base_url=base_url, data={"token": TOKEN}))
    assert_not_found(console.post("/console/dead-letters/purge", base_url=base_url, headers=bearer()))
    assert console.get("/console/login", base_url="https://collect.shop.example/").status_code == 200


def test_behind_a_trusted_proxy_the_forwarded_host_and_the_host_header_both_count(site_config, redis_url):
    """Behind one trusted proxy: X-Forwarded-Host naming a site's host is a 404, and so is a Host header naming one."""
    client = console_app_with(site_config, redis_url, hops=1).test_client()
    assert_not_found(client.get("/console/", headers={**bearer(), "X-Forwarded-Host": "shop.example"}, base_url="http://127.0.0.1:8000/"))
    assert_not_found(client.get("/console/", headers={**bearer(), "X-Forwarded-Host": "collect.shop.example"}, base_url="http://shop.example/"))
    assert client.get("/console/", headers={**bearer(), "X-Forwarded-Host": "collect.shop.example"}).status_code == 200
    direct = console_app_with(site_config, redis_url, hops=0).test_client()
    assert direct.get("/console/", headers={**bearer(), "X-Forwarded-Host": "shop.example"}).status_code == 200, "no trusted hop"


def test_with_a_console_host_the_console_answers_there_only(site_config, redis_url):
    """``[console] host`` is the one host name the console answers on (whatever the port)."""
    client = console_app_with(site_config, redis_url, host="console.shop.example").test_client()
    assert client.get("/console/", headers=bearer(), base_url="https://console.shop.example:8443/").status_code == 200
    for other in ("http://localhost/", "https://collect.shop.example/", "https://shop.example/"):
        assert_not_found(client.get("/console/", headers=bearer(), base_url=other))


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("shop.example", "console.host: is a host of site test_store's origins"),
        ("SHOP.EXAMPLE", "console.host: is a host of site test_store's origins"),
        ("https://console.example", "console.host: must be a host name"),
        ("console.example:8443", "console.host: must be a host name"),
        ("console.example/_c", "console.host: must be a host name"),
    ],
)
def test_a_console_host_on_a_sites_origin_or_not_a_host_name_is_a_config_error(host, problem):
    with pytest.raises(ConfigError) as error:
        parse_config(console_toml(f'[console]\ntoken = "{TOKEN}"\nhost = "{host}"\n'), ENV)
    assert any(line.startswith(problem) for line in error.value.problems), error.value.problems


def test_a_console_host_is_kept_as_a_lower_case_host_name():
    config = parse_config(console_toml(f'[console]\ntoken = "{TOKEN}"\nhost = "Console.Shop.Example"\n'), ENV)
    assert config.console.host == "console.shop.example"


def test_a_wrong_bearer_token_is_401_in_the_json_error_shape(console):
    """A wrong token answers 401 with the collector's error body and a Bearer challenge, and never echoes the token."""
    for path in ("/console/", "/console/api/summary"):
        answer = console.get(path, headers=bearer("not-the-console-token-at-all"))
        assert answer.status_code == 401
        assert answer.json["error"]["code"] == 401 and "token" in answer.json["error"]["message"]
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert "not-the-console-token" not in answer.get_data(as_text=True)


def test_the_right_bearer_token_shows_the_dashboard(console):
    """With ``Authorization: Bearer <token>`` the dashboard renders every panel, and is never cached."""
    answer = console.get("/console/", headers=bearer())
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    html = answer.get_data(as_text=True)
    for panel in ('id="chart"', 'id="backlog"', 'id="dead-letters"', 'id="tail"', 'id="refusals"'):
        assert panel in html
    assert answer.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]


def test_a_browser_without_a_session_is_sent_to_the_login_form(console):
    """An anonymous GET of a page redirects to the login form, remembering where it was going."""
    answer = console.get("/console/?site=test_store")
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/console/login?next=")
    assert "site%3Dtest_store" in answer.headers["Location"] or "site=test_store" in answer.headers["Location"]
    assert 'name="token"' in console.get(answer.headers["Location"]).get_data(as_text=True)


def test_a_script_without_credentials_gets_401_not_a_redirect(console):
    """The JSON API and POSTs answer an anonymous caller with 401, not the login page."""
    assert console.get("/console/api/summary").status_code == 401
    assert console.post("/console/dead-letters/replay").status_code == 401


def test_logging_in_sets_a_strict_http_only_cookie_and_shows_the_dashboard(console):
    """The login form sets an HttpOnly, SameSite=Strict cookie scoped to /console; with it the dashboard renders."""
    answer = console.post("/console/login", data={"token": TOKEN, "next": "/console/?site=test_store"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/console/?site=test_store"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("collector_console=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here
    page = console.get("/console/")
    assert page.status_code == 200 and 'id="dead-letters"' in page.get_data(as_text=True)
    assert console.get("/console/login").status_code == 302  # already in


def test_behind_a_path_prefix_every_link_and_the_cookie_keep_the_prefix(console):
    """Served under /_c/ (nginx's X-Forwarded-Prefix), the redirects, the cookie's path and the forms all carry /_c."""
    prefixed = "http://console.example/_c/"
    answer = console.get("/console/?site=test_store", base_url=prefixed)
    assert answer.headers["Location"].startswith("/_c/console/login?next=/_c/console/")
    answer = console.post("/console/login", data={"token": TOKEN, "next": "/_c/console/?site=test_store"}, base_url=prefixed)
    assert answer.headers["Location"] == "/_c/console/?site=test_store"
    assert "Path=/_c/console" in answer.headers["Set-Cookie"]
    page = console.get("/console/", base_url=prefixed).get_data(as_text=True)
    assert 'action="/_c/console/#dead-letters"' in page
    assert 'href="/_c/console/static/console.css"' in page and 'action="/_c/console/logout"' in page


def test_over_https_the_session_cookie_is_secure(console):
    """A login that arrived over HTTPS gets a Secure cookie."""
    answer = console.post("/console/login", data={"token": TOKEN}, base_url="https://collect.shop.example")
    assert "; Secure" in answer.headers["Set-Cookie"]


def test_a_wrong_token_in_the_form_is_refused_without_a_cookie(console):
    """A wrong token shows the form again with its error and no session; the typed value is not echoed."""
    answer = console.post("/console/login", data={"token": "guessing-the-token-123"})
    assert answer.status_code == 200 and "That is not the console token." in answer.get_data(as_text=True)
    assert "Set-Cookie" not in answer.headers
    assert "guessing-the-token-123" not in answer.get_data(as_text=True)
    assert console.get("/console/").status_code == 302


def test_login_never_redirects_off_the_console(console):
    """A ``next`` pointing elsewhere (another host, or outside /console) lands on the dashboard instead."""
    for target in ("https://evil.example/console/", "//evil.example/console/", "/metrics", "/console-other", "/\\evil.example"):
        answer = console.post("/console/login", data={"token": TOKEN, "next": target})
        assert answer.headers["Location"] == "/console/", target


@pytest.mark.parametrize("target", ["/console/\r\nSet-Cookie: x=1", "/console/\u2028", "/console/?site=a b", "/console/\x00"])
def test_a_next_with_a_line_break_or_a_space_lands_on_the_dashboard(console, target):
    """``next=/console/%0d%0a...`` is no 500 (it would split the Location header): the login, and a logged-in GET, go home."""
    answer = console.post("/console/login", data={"token": TOKEN, "next": target})
    assert answer.status_code == 303 and answer.headers["Location"] == "/console/"
    again = console.get("/console/login", query_string={"next": target})
    assert again.status_code == 302 and again.headers["Location"] == "/console/"


def test_login_attempts_are_limited_per_address_right_token_or_wrong(console):
    """Ten login posts a minute from one address, then 429 with Retry-After, however the token was guessed."""
    statuses = [console.post("/console/login", data={"token": f"guess-{n:02d}-of-the-token"}).status_code for n in range(10)]
    assert statuses == [200] * 10
    refused = console.post("/console/login", data={"token": TOKEN})
    assert refused.status_code == 429 and "login attempts" in refused.json["error"]["message"] and refused.headers["Retry-After"]
    assert "Set-Cookie" not in refused.headers
    assert console.post("/console/login", data={"token": TOKEN}, environ_base={"REMOTE_ADDR": "192.0.2.9"}).status_code == 303


def test_the_consoles_pages_and_api_are_rate_limited_like_collect(site_config, redis_url):
    client = console_app_with(site_config, redis_url, rate_limit="3 per minute").test_client()
    for path in ("/console/api/summary", "/console/api/dead-letters", "/console/", "/console/login"):
        statuses = [client.get(path, headers=bearer()).status_code for _ in range(4)]
        assert statuses[-1] == 429 and 429 not in statuses[:3], (path, statuses)
    assert client.get("/console/static/console.css").status_code == 200


def test_logging_out_ends_the_session(console):
    """After logout (a CSRF-protected POST) the dashboard sends the browser to the login form again."""
    csrf = log_in(console)
    assert console.post("/console/logout", data={}).status_code == 403
    assert console.post("/console/logout", data={"csrf": csrf}).status_code == 303
    assert console.get("/console/").status_code == 302


def test_after_logout_a_copy_of_the_cookie_opens_nothing(console_app):
    """Logout ends the session on the server: a cookie copied before it (another tab, a thief) no longer reads the console."""
    client = console_app.test_client()
    csrf = log_in(client)
    copied = client.get_cookie("collector_console", path="/console").value
    thief = console_app.test_client()
    thief.set_cookie("collector_console", copied, path="/console")
    assert thief.get("/console/").status_code == 200
    assert client.post("/console/logout", data={"csrf": csrf}).status_code == 303
    assert thief.get("/console/").status_code == 302 and thief.get("/console/api/summary").status_code == 401
    assert thief.post("/console/dead-letters/purge", data={"csrf": csrf}).status_code == 401


def test_a_session_ends_twelve_hours_after_the_login_however_much_it_is_used(console):
    """A session whose login is older than 12 hours no longer opens the dashboard, though its cookie is still signed."""
    log_in(console)
    with console.session_transaction("/console/") as session:
        session["since"] -= 12 * 3600 + 1
    assert console.get("/console/").status_code == 302
    assert console.get("/console/login").status_code == 200


def test_the_session_is_signed_with_a_key_derived_from_the_token(site_config, redis_url):
    """Two apps with the same token accept each other's session (gunicorn workers); another token's app does not."""

    def app_with(token: str):
        config = dataclasses.replace(site_config, console=ConsoleSettings(token=token))
        return create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True})

    first = app_with(TOKEN).test_client()
    log_in(first)
    cookie = first.get_cookie("collector_console", path="/console")
    assert cookie is not None
    for token, status in ((TOKEN, 200), ("another-console-token-4567", 302)):
        other = app_with(token).test_client()
        other.set_cookie("collector_console", cookie.value, path="/console")
        assert other.get("/console/").status_code == status


def test_the_token_is_never_logged(console, caplog):
    """Logins, bearer calls and refusals log who and what, never the token (right or wrong)."""
    caplog.set_level(logging.DEBUG)
    console.get("/console/", headers=bearer())
    console.get("/console/", headers=bearer("wrong-console-token-98765"))
    console.post("/console/login", data={"token": "wrong-console-token-98765"})
    csrf = log_in(console)
    console.post("/console/dead-letters/replay", data={"csrf": csrf})
    assert caplog.records
    assert TOKEN not in caplog.text and "wrong-console-token-98765" not in caplog.text


# dead letters: replay and purge ------------------------------------------------------


def test_a_replay_post_without_the_csrf_token_is_403_and_replays_nothing(console, dead_letters, redis_client):
    """A logged-in browser's POST without (or with a wrong) CSRF token is refused and the letters stay."""
    log_in(console)
    for form in ({"site": SITE, "destination": "commerce"}, {"site": SITE, "csrf": "forged"}):
        answer = console.post("/console/dead-letters/replay", data=form)
        assert answer.status_code == 403 and answer.json["error"]["code"] == 403
    assert console.post("/console/dead-letters/purge", data={}).status_code == 403
    assert len(dead_letters) == 3
    assert requeued(redis_client) == []


def test_replaying_one_letter_from_the_page_puts_it_back_in_its_outbox(console, dead_letters, redis_client):
    """The row's Replay form requeues that delivery, unchanged, and leaves the others dead-lettered."""
    csrf = log_in(console)
    form = {"csrf": csrf, "site": SITE, "destination": "commerce", "id": f"commerce-{SITE}-1"}
    answer = console.post("/console/dead-letters/replay", data=form)
    assert answer.status_code == 303 and answer.headers["Location"].endswith("#dead-letters")
    assert requeued(redis_client) == [f"commerce-{SITE}-1"]
    assert sorted(letter.delivery["id"] for letter in dead_letters) == [f"commerce-{OTHER_SITE}-3", f"commerce-{SITE}-2"]
    page = console.get(answer.headers["Location"]).get_data(as_text=True)
    assert "Requeued 1 dead letter." in page


def test_replaying_a_filter_requeues_every_matching_letter(console, dead_letters, redis_client):
    """The bulk Replay button with a site and destination requeues exactly that site's letters."""
    csrf = log_in(console)
    answer = console.post("/console/dead-letters/replay", data={"csrf": csrf, "site": SITE, "destination": "commerce"})
    assert answer.status_code == 303
    assert sorted(requeued(redis_client)) == [f"commerce-{SITE}-1", f"commerce-{SITE}-2"]
    assert [letter.delivery["site"] for letter in dead_letters] == [OTHER_SITE]


def test_purging_a_filter_deletes_only_those_letters(console, dead_letters, redis_client):
    """Purge by status removes the matching letters for good, requeues nothing, and keeps the rest."""
    csrf = log_in(console)
    answer = console.post("/console/dead-letters/purge", data={"csrf": csrf, "status": "401"})
    assert answer.status_code == 303
    assert sorted(letter.status for letter in dead_letters) == [400, 400]
    assert requeued(redis_client, OTHER_SITE) == []
    assert "Purged 1 dead letter." in console.get("/console/").get_data(as_text=True)


def test_a_bearer_script_may_replay_without_csrf_and_gets_json(console, dead_letters, redis_client):
    """A POST with the bearer token (no cookie to forge) needs no CSRF token and answers what it requeued."""
    answer = console.post("/console/dead-letters/replay?site=other_store", headers=bearer())
    assert answer.status_code == 200
    assert answer.json == {"replayed": 1, "deliveries": [f"commerce-{OTHER_SITE}-3"]}
    assert requeued(redis_client, OTHER_SITE) == [f"commerce-{OTHER_SITE}-3"]


def test_a_bad_filter_is_a_400_and_changes_nothing(console, dead_letters):
    """An unknown destination or a status that is not a number is refused before anything moves."""
    for query in ("destination=mailchimp", "status=abc"):
        assert console.post(f"/console/dead-letters/purge?{query}", headers=bearer()).status_code == 400
    assert len(dead_letters) == 3


def test_the_dead_letters_panel_lists_each_letter_with_its_buttons(console, dead_letters):
    """Each letter shows site, destination, delivery id, status, reason and attempts, with Replay and Purge."""
    html = console.get("/console/", headers=bearer()).get_data(as_text=True)
    row = re.search(rf'<tr data-delivery-id="commerce-{OTHER_SITE}-3">(.*?)</tr>', html, re.S).group(1)
    for text in (OTHER_SITE, "commerce", f"commerce-{OTHER_SITE}-3", "401", "HTTP 401", ">3<", ">Replay<", ">Purge<"):
        assert text in row, text
    filtered = console.get("/console/?site=test_store&status=400", headers=bearer()).get_data(as_text=True)
    assert filtered.count("<tr data-delivery-id=") == 2 and "Replay 2 matching" in filtered


# what the panels show ----------------------------------------------------------------


def test_the_chart_draws_delivered_and_failed_minutes_from_the_workers_counts(console, redis_client):
    """Minutes the workers counted appear as bars, per site and destination, with their totals."""
    now = time.time()
    record_job(redis_client, JobFigures(SITE, "depict", events_delivered=7), now=now - 120)
    record_job(redis_client, JobFigures(SITE, "depict", events_delivered=3, events_failed=2), now=now)
    html = console.get("/console/", headers=bearer()).get_data(as_text=True)
    figure = re.search(rf'<figure class="chart-card" data-site="{SITE}" data-destination="depict"(.*?)</figure>', html, re.S).group(0)
    assert 'data-delivered="10"' in figure and 'data-failed="2"' in figure
    assert [int(n) for n in re.findall(r'<rect class="delivered"[^>]*data-count="(\d+)"', figure)] == [7, 3]
    assert re.findall(r'<rect class="failed"[^>]*data-count="(\d+)"', figure) == ["2"]
    # the busiest minute (7 events) fills the chart's height; 3 + 2 of 7 stack to 5/7 of it
    assert re.search(r'<rect class="delivered" x="\d+" y="0.00" width="3" height="100.00" data-count="7"', figure)
    assert re.search(r'<rect class="failed" x="\d+" y="28.57" width="3" height="28.57" data-count="2"', figure)
    # a configured pair with no events is named on one line instead of an empty chart
    assert f'<figure class="chart-card" data-site="{OTHER_SITE}"' not in html
    assert f'<span class="quiet-pair" data-site="{OTHER_SITE}" data-destination="commerce">' in html


def test_the_backlog_shows_outbox_depth_and_lag_per_destination(console, client, redis_client):
    """Accepted events waiting in the outboxes show as entries per destination and per outbox, with a lag."""
    sent = client.post("/collect", data=json.dumps({"site": SITE, "events": [make_event()]}), headers={"Origin": ORIGIN})
    assert sent.status_code == 202
    time.sleep(1.1)
    summary = console.get("/console/api/summary", headers=bearer()).json
    depict = next(row for row in summary["backlog"] if row["destination"] == "depict")
    assert depict["outbox_entries"] == 1 and depict["lag_seconds"] >= 1
    assert {"site": SITE, "destination": "commerce", "entries": 1} in summary["outboxes"]
    html = console.get("/console/", headers=bearer()).get_data(as_text=True)
    backlog = re.search(r'<tr data-destination="depict">(.*?)</tr>', html, re.S).group(1)
    assert '<td class="num">1</td>' in backlog and " s</td>" in backlog
    outboxes = re.search(r"<h3>Outboxes</h3>(.*?)</section>", html, re.S).group(1)
    assert f"<tr><td>{SITE}</td><td>commerce</td><td class=\"num\">1</td></tr>" in outboxes


def test_the_live_tail_shows_accepted_events_masked_and_refusals_with_reasons(console):
    """An accepted event appears (the app that serves the console keeps the tail) with its type and id but no personal data; a refused batch appears with its reason."""
    consumer = {"id": "con_1", "birthDate": "1990-01-01", "email": PERSON, "firstName": "Jane", "lastName": "Doe", "phoneNumber": "5555550199"}
    account = {"id": "acc_1", "consumer": consumer}
    event = make_event("User Login", user_id=PERSON, props={"account": account})
    assert console.post("/collect", data=json.dumps({"site": SITE, "events": [event]}), headers={"Origin": ORIGIN}).status_code == 202
    refused = console.post("/collect", data=json.dumps({"site": "no_such_site", "events": [make_event()]}), headers={"Origin": ORIGIN})
    assert refused.status_code == 400
    html = console.get("/console/", headers=bearer()).get_data(as_text=True)
    tail = re.search(r'<section id="tail".*?</section>', html, re.S).group(0)
    assert event["id"] in tail and "User Login" in tail
    assert PERSON not in html and "5555550199" not in html and "1990-01-01" not in html and "ja***" in tail
    refusals = re.search(r'<section id="refusals".*?</section>', html, re.S).group(0)
    assert "unknown site" in refusals and ">400<" in refusals


RESET_URL = f"https://shop.example/reset?email={PERSON}&token=s3cr3t-reset-token&lang=en#access_token=s3cr3t-fragment"


def test_the_console_masks_emails_and_secret_url_parameters(console, redis_client, caplog):
    """Page URLs, props, refusal reasons and vendors' answers show no e-mail address and no token, by default; the rest stays."""
    event = make_event("page_view", url=RESET_URL, props={"page_url": RESET_URL, "entity_identifiers": {"by": f"mailto:{PERSON}"}})
    assert console.post("/collect", data=json.dumps({"site": SITE, "events": [event]}), headers={"Origin": ORIGIN}).status_code == 202
    console.post("/collect", data=json.dumps({"site": PERSON, "events": [make_event()]}), headers={"Origin": ORIGIN})
    DeadLetters(redis_client).add([Attempt(make_delivery(SITE, "commerce", 7), Outcome.DEAD, status=400, answer=f'{{"email": "{PERSON}"}}')], 1)
    html = console.get("/console/", headers=bearer()).get_data(as_text=True)
    api = console.get("/console/api/dead-letters", headers=bearer()).get_data(as_text=True)
    for shown in (html, api):
        assert PERSON not in shown and "jane.doe%40example.com" not in shown and "s3cr3t" not in shown
    assert "reset?email=***&amp;token=***&amp;lang=en#access_token=***" in html
    assert "mailto:***" in html and "unknown site &#39;***&#39;" in html
    assert "refused with 400: unknown site '***'" in caplog.text and PERSON not in caplog.text


def test_what_the_panels_show_is_escaped(console, redis_client):
    """Text that came from the outside (a refusal's reason, a vendor's answer) is shown as text, never as markup."""
    from collector.observe.live_tail import record_refusal

    hostile = '<script>alert("x")</script>'
    record_refusal(redis_client, 400, hostile, SITE, {"field": hostile})
    DeadLetters(redis_client).add([Attempt(make_delivery(SITE, "depict", 9), Outcome.DEAD, status=422, answer=hostile)], 1)
    html = console.get("/console/", headers=bearer()).get_data(as_text=True)
    assert hostile not in html and "&lt;script&gt;" in html


def test_the_summary_api_counts_events_and_dead_letters_for_probes(console, redis_client, dead_letters):
    """``/console/api/summary`` gives a probe the backlog, dead letters per site and destination, and recent events."""
    record_job(redis_client, JobFigures(SITE, "commerce", events_delivered=4, events_failed=1))
    summary = console.get("/console/api/summary?minutes=5", headers=bearer()).json
    assert summary["dead_letters_total"] == 3
    assert {"site": SITE, "destination": "commerce", "count": 2} in summary["dead_letters"]
    assert summary["events"] == {"minutes": 5, "by_site_and_destination": [{"site": SITE, "destination": "commerce", "delivered": 4, "failed": 1}]}
    assert {row["destination"] for row in summary["backlog"]} == {"depict", "commerce"}
    listed = console.get("/console/api/dead-letters?status=401", headers=bearer()).json
    assert listed["matching"] == 1 and listed["dead_letters"][0]["id"] == f"commerce-{OTHER_SITE}-3"


def test_dropped_events_are_shown_by_site_and_reason(console, redis_client):
    """The dashboard and the summary API show what was answered but never sent: bots' events, privacy drops."""
    record_dropped(redis_client, SITE, {"bot": 3, "privacy": 1})
    record_dropped(redis_client, OTHER_SITE, {"bot": 2})
    page = console.get("/console/", headers=bearer()).get_data(as_text=True)
    section = page[page.index('id="dropped"') :]
    assert re.search(rf'data-site="{SITE}" data-reason="bot"><td>{SITE}</td><td>a known bot or headless browser</td><td class="num">3<', section)
    assert re.search(rf'data-site="{OTHER_SITE}" data-reason="bot">.*<td class="num">2<', section)
    summary = console.get("/console/api/summary?minutes=5", headers=bearer()).json
    assert summary["dropped"] == {
        "minutes": 5,
        "by_site_and_reason": [
            {"site": OTHER_SITE, "reason": "bot", "events": 2},
            {"site": SITE, "reason": "bot", "events": 3},
            {"site": SITE, "reason": "privacy", "events": 1},
        ],
    }


def test_collect_does_not_read_the_console_session(console_app, redis_client):
    """Outside /console the session cookie is neither read nor set: /collect answers as before."""
    client = console_app.test_client()
    log_in(client)
    sent = client.post("/collect", data=json.dumps({"site": SITE, "events": [make_event()]}), headers={"Origin": ORIGIN})
    assert sent.status_code == 202
    assert "collector_console" not in " ".join(sent.headers.getlist("Set-Cookie"))
    assert "Cookie" not in sent.headers.get("Vary", "")


def test_with_redis_unreachable_the_console_answers_503(site_config):
    """When Redis does not answer, the console says so with a 503 in the error shape instead of failing with a 500."""
    from collector.storage.redis_server import free_port

    config = dataclasses.replace(site_config, console=ConsoleSettings(token=TOKEN))
    app = create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/1", "TESTING": True})
    answer = app.test_client().get("/console/", headers=bearer())
    assert answer.status_code == 503 and "Redis" in answer.json["error"]["message"]
