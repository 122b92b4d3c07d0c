"""``[collector.paths]``: the browser-facing paths follow the config, the defaults then answer 404, the snippet learns them."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re

import pytest
import rjsmin

from collector import create_app
from collector.config.loading import ConfigError, parse_config
from collector.config.schema import ConsoleSettings
from collector.demo import demo_config
from collector.inbound import snippet
from collector.inbound.paths import CollectorPaths, is_fixed, relative_reference
from tests.collector.inbound.test_collect import queued
from tests.conftest import ORIGIN, SITE
from tests.factories import make_event

RENAMED = CollectorPaths(snippet="/assets/js/app.js", collect="/e", site_settings="/assets/cfg-{site}.json")
BARE = {"sites": {"s": {}}}


@pytest.fixture
def renamed_app(site_config, redis_url):
    config = dataclasses.replace(site_config, settings=dataclasses.replace(site_config.settings, paths=RENAMED))
    return create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True})


@pytest.fixture
def renamed(renamed_app):
    return renamed_app.test_client()


def paths_of(table: dict) -> CollectorPaths:
    return parse_config({"collector": {"paths": table}, **BARE}).settings.paths


def problems_of(table: dict) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        paths_of(table)
    return raised.value.problems


def test_the_defaults_are_the_contracts():
    assert paths_of({}) == CollectorPaths("/t.js", "/collect", "/sites/{site}/settings.json")


def test_renamed_paths_are_read():
    table = {"snippet": RENAMED.snippet, "collect": RENAMED.collect, "site_settings": RENAMED.site_settings}
    assert paths_of(table) == RENAMED


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"collect": "collect"}, "collector.paths.collect: must be / then segments"),
        ({"collect": "/c?x=1"}, "collector.paths.collect: must be / then segments"),
        ({"collect": "/a/../collect"}, "collector.paths.collect: must be / then segments"),
        ({"collect": "/it's"}, "collector.paths.collect: must be / then segments"),
        ({"snippet": "/js/"}, "collector.paths.snippet: names a file"),
        ({"collect": "/metrics"}, "collector.paths.collect: /metrics is one of the collector's own URLs"),
        ({"snippet": "/v1/t.js"}, "collector.paths.snippet: /v1/t.js is one of the collector's own URLs"),
        ({"collect": "/console"}, "collector.paths.collect: /console is one of the collector's own URLs"),
        ({"site_settings": "/settings.json"}, "collector.paths.site_settings: must hold {site} exactly once"),
        ({"site_settings": "/{site}/{site}.json"}, "collector.paths.site_settings: must hold {site} exactly once"),
        ({"site_settings": "/_demo/{site}.json"}, "collector.paths.site_settings: /_demo/site.json is one of the collector's own URLs"),
        ({"collect": "/t.js"}, "collector.paths: snippet and collect must differ"),
        ({"collect": "/sites/x/settings.json"}, "collector.paths: collect would be taken by site_settings"),
        ({"beacon": "/b"}, "collector.paths.beacon: Unknown field."),
    ],
)
def test_check_config_names_what_is_wrong_with_a_path(table, problem):
    assert any(line.startswith(problem) for line in problems_of(table)), problems_of(table)


@pytest.mark.parametrize(
    ("snippet_path", "target", "reference"),
    [
        ("/t.js", "/collect", "collect"),
        ("/t.js", "/sites/{site}/settings.json", "sites/{site}/settings.json"),
        ("/assets/js/app.js", "/e", "../../e"),
        ("/assets/js/app.js", "/assets/cfg-{site}.json", "../cfg-{site}.json"),
        ("/assets/js/app.js", "/assets/js/e", "e"),
        ("/a/b.js", "/a/", "./"),
        ("/a/b.js", "/a", "../a"),
        ("/x.js", "/a/b/c", "a/b/c"),
    ],
)
def test_a_path_becomes_a_reference_relative_to_the_snippets_folder(snippet_path, target, reference):
    assert relative_reference(snippet_path, target) == reference


def test_the_default_paths_leave_the_source_as_it_is():
    """With the defaults the served bytes are the source's own: no size, no cost."""
    source = snippet.snippet_source()
    assert snippet.with_paths(source, CollectorPaths()) == source
    assert snippet.current_snippet().minified == rjsmin.jsmin(source).strip().encode() + b"\n"


def test_the_snippet_is_built_once_per_set_of_paths_with_its_own_etag():
    default, renamed = snippet.current_snippet(), snippet.current_snippet(RENAMED)
    assert snippet.current_snippet(RENAMED) is renamed
    assert default.etag != renamed.etag
    assert b"EP=O+'../../e'" in renamed.minified
    assert b"fetch(O+'../cfg-'+site+'.json')" in renamed.minified


@pytest.mark.parametrize("slot", snippet.PATH_SLOTS)
def test_the_source_builds_each_renamable_url_from_one_literal(slot):
    """static/t.js keeps ``O + 'collect'`` and ``O + 'sites/' + site + '/settings.json'``: the server writes the paths there."""
    assert snippet.snippet_source().count(slot) == 1


def test_a_source_without_its_slot_is_not_served():
    with pytest.raises(RuntimeError, match="must hold 'collect' exactly once"):
        snippet.with_paths("var EP = O + 'send';", CollectorPaths())


def test_with_renamed_paths_the_default_ones_answer_404(renamed):
    assert renamed.get("/t.js").status_code == 404
    assert renamed.post("/collect", data=json.dumps({"site": SITE, "events": [make_event()]}), headers={"Origin": ORIGIN}).status_code == 404
    assert renamed.options("/collect", headers={"Origin": ORIGIN}).status_code == 404
    assert renamed.get(f"/sites/{SITE}/settings.json").status_code == 404


def test_with_renamed_paths_everything_works_at_the_new_ones(renamed, redis_client):
    script = renamed.get(RENAMED.snippet, headers={"Accept-Encoding": "gzip"})
    assert script.status_code == 200 and script.headers["Content-Type"].startswith("application/javascript")
    assert b"O+'../../e'" in gzip.decompress(script.data)
    assert renamed.get(f"/assets/cfg-{SITE}.json").json == {"require_consent": False, "honor_gpc": True}
    assert renamed.options("/e", headers={"Origin": ORIGIN}).status_code == 204
    sent = renamed.post("/e", data=json.dumps({"site": SITE, "events": [make_event()]}), headers={"Origin": ORIGIN})
    assert sent.status_code == 202 and sent.json["accepted"] == 1
    assert sent.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert len(queued(redis_client)) == 1
    assert 'collector_collect_requests_total{status="202"}' in renamed.get("/metrics").get_data(as_text=True)
    assert list(renamed.get("/openapi.json").json["paths"]) == ["/e"]


def test_the_rate_limit_applies_at_the_renamed_collect_path(site_config, redis_url):
    settings = dataclasses.replace(site_config.settings, paths=RENAMED, rate_limit="2 per minute")
    app = create_app({"COLLECTOR_CONFIG": dataclasses.replace(site_config, settings=settings), "REDIS_URL": redis_url, "TESTING": True})
    client = app.test_client()
    statuses = [client.post("/e", data=json.dumps({"site": SITE, "events": [make_event()]}), headers={"Origin": ORIGIN}).status_code for _ in range(3)]
    assert statuses == [202, 202, 429]


def test_the_fixed_paths_name_every_other_url_of_the_collector(redis_url):
    """A renamed path cannot take a URL of the demo, the console, the /v1 API or the probes: the list covers them all."""
    config = dataclasses.replace(demo_config(8000), console=ConsoleSettings(token="console-token-for-the-tests-0123"))
    app = create_app({"COLLECTOR_CONFIG": config, "REDIS_URL": redis_url, "TESTING": True, "DEMO": True})
    renamable = {"snippet.snippet", "collect.collect", "collect.collect_preflight", "collect.site_settings"}
    others = {re.sub(r"<[^>]+>", "x", rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint not in renamable}
    assert {"/", "/healthz", "/v1/x", "/console/", "/_demo/deliveries"} <= others
    assert [path for path in sorted(others) if not is_fixed(path)] == []
