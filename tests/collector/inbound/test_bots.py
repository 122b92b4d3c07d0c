"""Bots kept out of the vendors' data: judged on the User-Agent, dropped by default, counted, answered 2xx.

The shared test config keeps bots on every site (the tests' httpx is one);
here ``test_store`` is back on the default, ``drop``, and ``other_store``
keeps them.
"""

from __future__ import annotations

import gzip
import json
import tomllib

import pytest
from prometheus_client import REGISTRY

from collector import create_app
from collector.config.loading import parse_config
from collector.inbound import bots
from collector.observe.console import panels
from collector.storage.drop_stats import dropped_counts
from tests.collector.inbound.sources.test_api import basic, send
from tests.collector.inbound.test_collect import nothing_queued, post, queued
from tests.conftest import BROWSER_WRITE_KEY, ORIGIN, OTHER_SITE, SERVER_WRITE_KEY, SITE, config_toml
from tests.factories import make_event, make_segment_message

GOOGLEBOT = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.6778.33 Safari/537.36"
AHREFS = "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
SAFARI_IOS = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
FACEBOOK_APP = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.39.105;FBDV/iPhone14,5;FBSV/17.5;FBLC/en_US]"
TEST_STORE_KEEPS = f'[sites.{SITE}]\norigins = ["{ORIGIN}"]\nbots = "keep"\n'


@pytest.fixture
def app(redis_url: str, depict_server, commerce_server):
    text = config_toml(depict_server.url, commerce_server.url)
    assert TEST_STORE_KEEPS in text
    document = tomllib.loads(text.replace(TEST_STORE_KEEPS, f'[sites.{SITE}]\norigins = ["{ORIGIN}"]\n'))
    config = parse_config(document, {"TEST_DEPICT_KEY": "d", "TEST_COMMERCE_KEY": "c"})
    assert config.sites[SITE].bots == "drop" and config.sites[OTHER_SITE].bots == "keep"
    return create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True})


def events_counted(site: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("collector_events_total", {"site": site, "outcome": outcome}) or 0.0


@pytest.mark.parametrize("user_agent", [GOOGLEBOT, HEADLESS, AHREFS, "curl/8.5.0", "python-requests/2.32.3"])
def test_the_list_names_crawlers_headless_browsers_and_scripts(user_agent):
    assert bots.is_bot(user_agent)


@pytest.mark.parametrize("user_agent", [CHROME, SAFARI_IOS, FACEBOOK_APP, "", None])
def test_the_list_leaves_browsers_in_app_browsers_and_no_user_agent_alone(user_agent):
    assert not bots.is_bot(user_agent)


def test_each_user_agent_is_judged_once_per_process(monkeypatch):
    """The list is matched once per distinct User-Agent; /collect then pays a look-up."""
    bots.is_bot.cache_clear()
    calls: list[str] = []
    monkeypatch.setattr(bots.crawleruseragents, "is_crawler", lambda user_agent: calls.append(user_agent) or False)
    for _ in range(3):
        bots.is_bot(CHROME)
    assert calls == [CHROME]
    bots.is_bot.cache_clear()


@pytest.mark.parametrize("user_agent", [GOOGLEBOT, HEADLESS])
def test_a_bots_batch_is_answered_202_and_not_queued_where_the_site_drops_bots(client, redis_client, user_agent):
    """Nothing queued, no cookie; the answer says how many were dropped and accepts none."""
    before = events_counted(SITE, "dropped_as_bot")
    response = post(client, {"site": SITE, "events": [make_event("page_view"), make_event("click")]}, **{"User-Agent": user_agent})
    assert response.status_code == 202
    assert response.json == {"accepted": 0, "duplicates": 0, "rejected": [], "dropped_as_bot": 2}
    assert "Set-Cookie" not in response.headers
    assert nothing_queued(redis_client)
    assert events_counted(SITE, "dropped_as_bot") == before + 2
    assert dropped_counts(redis_client, 5) == {(SITE, "bot"): 2}


@pytest.mark.parametrize("user_agent", [GOOGLEBOT, HEADLESS])
def test_a_bots_batch_is_queued_where_the_site_keeps_bots(client, redis_client, user_agent):
    response = post(client, {"site": OTHER_SITE, "events": [make_event("User Login")]}, **{"User-Agent": user_agent})
    assert response.status_code == 202 and response.json == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert len(queued(redis_client, site=OTHER_SITE, destination="commerce")) == 1


def test_a_browsers_batch_is_queued_where_the_site_drops_bots(client, redis_client):
    response = post(client, {"site": SITE, "events": [make_event("page_view")]}, **{"User-Agent": CHROME})
    assert response.status_code == 202 and response.json["accepted"] == 1
    assert len(queued(redis_client)) == 1 and "Set-Cookie" in response.headers


def test_a_bots_invalid_events_are_refused_as_anyones(client, redis_client):
    """The events are checked first: a refusal reads the same whoever sent it."""
    response = post(client, {"site": SITE, "events": [{"id": "bad"}]}, **{"User-Agent": GOOGLEBOT})
    assert response.status_code == 422
    assert nothing_queued(redis_client)


def test_privacy_drops_are_counted_for_the_console_too(client, redis_client):
    response = post(client, {"site": SITE, "events": [make_event()]}, **{"User-Agent": CHROME, "Sec-GPC": "1"})
    assert response.json == {"accepted": 0, "duplicates": 0, "rejected": [], "dropped_for_privacy": 1}
    assert dropped_counts(redis_client, 5) == {(SITE, "privacy"): 1}


def test_a_browser_write_keys_messages_are_judged_on_the_requests_user_agent(client, redis_client):
    message = make_segment_message(event="Product Viewed", properties={"product_id": "KB-1"}, context={"userAgent": CHROME})
    response = send(client, "/v1/t", message, **{"User-Agent": HEADLESS})
    assert response.status_code == 200
    assert response.json == {"success": True, "accepted": 0, "duplicates": 0, "rejected": [], "dropped_as_bot": 1}
    assert nothing_queued(redis_client)


def test_a_server_write_keys_messages_are_judged_each_on_its_visitors_user_agent(client, redis_client):
    """The backend's own User-Agent says nothing of the visitor: each message's context.userAgent is judged."""
    crawler, shopper = (
        make_segment_message(event="Signed Up", userId=f"user-{n}", anonymousId=None, context={"ip": f"203.0.113.{n}", "userAgent": agent})
        for n, agent in ((1, GOOGLEBOT), (2, CHROME))
    )
    body = gzip.compress(json.dumps({"batch": [crawler, shopper]}).encode())
    headers = {"Content-Encoding": "gzip", "User-Agent": "analytics-python/2.4.0"}
    response = send(client, "/v1/batch", body, write_key=None, auth=basic(SERVER_WRITE_KEY), **headers)
    assert response.status_code == 200
    assert response.json == {"success": True, "accepted": 1, "duplicates": 0, "rejected": [], "dropped_as_bot": 1}
    [delivery] = queued(redis_client, destination="commerce")
    assert delivery["body"]["account"] == "user-2", delivery["body"]


def test_a_beacon_from_a_headless_browser_is_dropped(client, redis_client):
    body = json.dumps({"batch": [make_segment_message(event="Left")]}).encode()
    response = send(client, f"/v1/batch?writeKey={BROWSER_WRITE_KEY}", body, write_key=None, **{"User-Agent": HEADLESS})
    assert response.status_code == 200 and response.json["dropped_as_bot"] == 1
    assert nothing_queued(redis_client)


def test_the_console_shows_dropped_events_by_site_and_reason(client, redis_client):
    post(client, {"site": SITE, "events": [make_event(), make_event()]}, **{"User-Agent": AHREFS})
    post(client, {"site": SITE, "events": [make_event()]}, **{"User-Agent": CHROME, "Sec-GPC": "1"})
    assert panels.dropped_rows(redis_client, 60, None) == [
        {"site": SITE, "reason": "bot", "events": 2},
        {"site": SITE, "reason": "privacy", "events": 1},
    ]
