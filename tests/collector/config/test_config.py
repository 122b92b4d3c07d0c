"""The site configuration file and `collector check-config`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from collector.config.loading import ConfigError, load_config

GOOD = """
[sites.my_store]
origins = ["https://my-store.example", "https://www.my-store.example"]

[sites.my_store.depict]
url = "https://api.depict.ai/create-events"
api_key = "${DEPICT_API_KEY}"
tenant = "my_store"
market = "us"

[sites.my_store.commerce]
url = "https://commerce.driv.ly/api/webevents"
api_key = "${COMMERCE_API_KEY}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return path


def test_contract_sketch_loads_with_keys_from_environment(tmp_path):
    """The contract's own example file loads, secrets taken from the environment."""
    config = load_config(write(tmp_path, GOOD), {"DEPICT_API_KEY": "dk", "COMMERCE_API_KEY": "ck"})
    site = config.sites["my_store"]
    assert site.depict.api_key == "dk" and site.depict.tenant == "my_store" and site.depict.market == "us"
    assert site.commerce.api_key == "ck" and site.commerce.auth_scheme == "Bearer"
    assert site.depict.events == ("page_view", "click", "add_to_cart", "purchase", "element_visible", "ws_click", "recommendations_inserted")
    assert site.commerce.events == ("*",)


def test_api_keys_never_appear_in_the_config_repr(tmp_path):
    """Logging a config object cannot leak a key."""
    config = load_config(write(tmp_path, GOOD), {"DEPICT_API_KEY": "secret-dk", "COMMERCE_API_KEY": "secret-ck"})
    assert "secret-dk" not in repr(config) and "secret-ck" not in repr(config)


def test_privacy_and_spending_defaults(tmp_path):
    """Without settings a site takes identifiers only in an Account and 10 Web Events a request."""
    site = load_config(write(tmp_path, GOOD), {"DEPICT_API_KEY": "dk", "COMMERCE_API_KEY": "ck"}).sites["my_store"]
    assert site.commerce.account_fields == {"id", "anonymousIds", "consumer.id", "lead.id"}
    assert site.limits.web_events_per_request == 10
    assert site.limits.events_per_minute == 60_000 and site.limits.visitor_events_per_minute == 600


def test_check_config_warns_when_the_web_event_budget_is_below_a_snippet_batch(tmp_path):
    """A budget the snippet's own batches would break is legal but named."""
    from collector.cli.check_config import config_warnings

    text = GOOD + "\n[sites.my_store.limits]\nweb_events_per_request = 3\n"
    config = load_config(write(tmp_path, text), {"DEPICT_API_KEY": "dk", "COMMERCE_API_KEY": "ck"})
    assert any("web_events_per_request: 3 is below the 10 events" in warning for warning in config_warnings(config))


def test_a_site_may_have_no_destination(tmp_path):
    """A site with neither destination is legal (events are accepted and dropped)."""
    config = load_config(write(tmp_path, "[sites.bare]\n"), {})
    assert config.sites["bare"].depict is None and config.sites["bare"].commerce is None


def test_dollar_dollar_keeps_a_literal(tmp_path):
    """`$${` escapes interpolation."""
    text = GOOD.replace('"${COMMERCE_API_KEY}"', '"$${NOT_A_VAR}"')
    config = load_config(write(tmp_path, text), {"DEPICT_API_KEY": "dk"})
    assert config.sites["my_store"].commerce.api_key == "${NOT_A_VAR}"


BAD = """
[collector]
rate_limit = "ten per potato"
trusted_proxy_hops = -1

[collector.cookie]
nmae = "x"

[sites.my_store]
origins = ["https://my-store.example/shop"]

[sites.my_store.depict]
url = "ftp://nope"
api_key = "${MISSING_KEY}"
tenant = "t"
events = ["page_view", "User Login"]

[sites.my_store.commerce]
url = "https://commerce.driv.ly/api/webevents"
api_kye = "typo"
account_fields = ["id", "consumer.shoe_size"]

[sites.my_store.limits]
web_events_per_request = 51
visitor_events_per_minute = 0
address_share = 1.5

[sites.other]
[sites.other.commerce]
url = "https://commerce.driv.ly/api/webevents"
api_key = "clé secrète"

[sites."bad name"]
"""

EXPECTED_PROBLEMS = [
    "line 3: collector.rate_limit: not a rate limit",
    "line 4: collector.trusted_proxy_hops: Must be greater than or equal to 0",
    "line 7: collector.cookie.nmae: unknown key; did you mean `name`?",
    "line 10: sites.my_store.origins[0]: must be scheme://host[:port] with no path",
    "line 13: sites.my_store.depict.url: Not a valid URL.",
    "line 14: sites.my_store.depict.api_key: environment variable MISSING_KEY is not set",
    "line 12: sites.my_store.depict.market: Missing data for required field.",
    "line 16: sites.my_store.depict.events: not Depict event types: User Login",
    "line 20: sites.my_store.commerce.api_kye: unknown key; did you mean `api_key`?",
    "line 18: sites.my_store.commerce.api_key: Missing data for required field.",
    "line 21: sites.my_store.commerce.account_fields[1]: not a field of Commerce's Account: consumer.shoe_size",
    "line 24: sites.my_store.limits.web_events_per_request: Must be greater than or equal to 0 and less than or equal to 50",
    "line 25: sites.my_store.limits.visitor_events_per_minute: Must be greater than or equal to 1",
    "line 26: sites.my_store.limits.address_share: Must be greater than 0 and less than or equal to 1",
    "line 31: sites.other.commerce.api_key: must be printable ASCII without spaces",
    "line 33: sites.bad name: site names are",
]


def test_every_problem_is_reported_with_its_key_path(tmp_path):
    """One run names every problem, each under its key path; unknown keys are errors."""
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, BAD), {})
    text = "\n".join(raised.value.problems)
    for expected in EXPECTED_PROBLEMS:
        assert expected in text, f"missing {expected!r} in:\n{text}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("not toml = = =", "not valid TOML"),
        ("[collector]\n", "sites: Missing data for required field."),
        ("sites = {}\n", "sites: define at least one site"),
    ],
)
def test_unusable_files_say_why(tmp_path, text, expected):
    """Broken TOML, no sites and an empty sites table are explained."""
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text), {})
    assert any(expected in problem for problem in raised.value.problems)


def run_check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=Path(__file__).resolve().parents[3],
        timeout=60,
    )


def test_check_config_command_fails_with_every_problem(tmp_path):
    """`collector check-config` prints each problem with its key path and exits non-zero."""
    result = run_check_config(write(tmp_path, BAD), {})
    assert result.returncode == 1
    for expected in EXPECTED_PROBLEMS:
        assert expected in result.stderr


def test_check_config_command_passes_a_good_file(tmp_path):
    """A good file exits 0 and lists the sites' destinations, without printing any key."""
    result = run_check_config(write(tmp_path, GOOD), {"DEPICT_API_KEY": "dk-secret", "COMMERCE_API_KEY": "ck-secret"})
    assert result.returncode == 0, result.stderr
    assert "site my_store: depict, commerce" in result.stdout
    assert "secret" not in result.stdout + result.stderr


def test_problems_come_in_the_order_of_the_file(tmp_path):
    """The report reads top to bottom, as the file does."""
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, BAD), {})
    numbers = [int(problem.split(":")[0].removeprefix("line ")) for problem in raised.value.problems]
    assert numbers == sorted(numbers)


@pytest.mark.parametrize("value", ['"yes"', '"true"', "1", '"off"'])
def test_a_boolean_must_be_true_or_false(tmp_path, value):
    """`require_consent = "yes"` is refused, not guessed."""
    text = GOOD.replace("[sites.my_store]\n", f"[sites.my_store]\nrequire_consent = {value}\n", 1)
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text), {})
    assert any(problem.endswith("sites.my_store.require_consent: must be true or false, without quotes") for problem in raised.value.problems)


def test_a_write_key_listed_twice_is_named_with_both_places(tmp_path):
    """The report says which key (a server key only by its start: it is a secret) and where else it is listed."""
    text = GOOD + """
[sites.my_store.sources]
write_keys = ["wk_public_1"]
server_write_keys = ["sk_secret_abcdef"]

[sites.second]
origins = ["https://second.example"]

[sites.second.sources]
write_keys = ["wk_public_1"]
server_write_keys = ["sk_secret_abcdef"]
"""
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text), {"DEPICT_API_KEY": "d", "COMMERCE_API_KEY": "c"})
    [problem] = raised.value.problems
    assert "sites.second.sources.write_keys[0]: write key 'wk_public_1' is also listed at sites.my_store.sources.write_keys[0]" in problem
    assert problem.startswith("line ")
    assert "sk_secret_abcdef" not in problem


def test_an_unknown_key_far_from_any_known_one_gets_no_guess(tmp_path):
    """A suggestion only when one is close; otherwise the key is just unknown."""
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, GOOD.replace("[sites.my_store]\n", "[sites.my_store]\nzzqx = 1\n", 1)), {"DEPICT_API_KEY": "d", "COMMERCE_API_KEY": "c"})
    assert any(problem.endswith("sites.my_store.zzqx: unknown key") for problem in raised.value.problems)
