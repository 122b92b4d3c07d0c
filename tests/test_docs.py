"""The guides build what they say, and their links lead somewhere.

A newcomer follows the README's configuration (and production.md's
environment file), or copies the full reference of docs/configuration.md:
each must pass check-config. The README recommends one way to serve the
collector (a path of the shop's own host) and every example of it must use
that way, as production.md does. And since the README is short and sends the
reader to docs/ for the rest, a link to a moved file or a renamed heading is
a dead end: every relative link and anchor is checked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
PRODUCTION = REPO / "docs" / "production.md"
CONFIGURATION = REPO / "docs" / "configuration.md"
NGINX = REPO / "deploy" / "nginx" / "collector.conf"
GUIDES = [README, *sorted((REPO / "docs").glob("*.md"))]
SECRET = "a-test-secret-of-32-characters-x"
RECOMMENDED_PREFIX = "https://my-store.example/_c"
SUBDOMAIN = "collect.my-store.example"

_FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.DOTALL | re.MULTILINE)
_INLINE_CODE = re.compile(r"`[^`]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} +(.+?) *#* *$", re.MULTILINE)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def code_blocks(path: Path, language: str) -> list[str]:
    """The fenced blocks of one language, list-indented ones included, as they would be copied."""
    return [textwrap.dedent(body) for _, lang, body in _FENCE.findall(path.read_text()) if lang == language]


def prose(path: Path) -> str:
    """The text outside fenced and inline code, where links and headings are Markdown."""
    return _INLINE_CODE.sub("", _FENCE.sub("", path.read_text()))


def github_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces as hyphens, repeats numbered."""
    anchors: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text())):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        numbered, count = slug, 0
        while numbered in anchors:
            count += 1
            numbered = f"{slug}-{count}"
        anchors.add(numbered)
    return anchors


def dead_links(path: Path) -> list[str]:
    """Each relative link of a guide whose file does not exist, or whose #anchor is no heading of it."""
    dead = []
    for target in _LINK.findall(prose(path)):
        if _SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            dead.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in github_anchors(linked):
            dead.append(f"{target}: no heading #{anchor} in {linked.relative_to(REPO)}")
    return dead


def reference_configuration() -> str:
    """docs/configuration.md's full sample (the one that shows [collector.delivery] and a site)."""
    [sample] = [block for block in code_blocks(CONFIGURATION, "toml") if "[collector.delivery]" in block and "[sites." in block]
    return sample


def readme_configuration() -> str:
    """Every TOML block of the README, in order: the file a reader builds by following it."""
    return "\n".join(code_blocks(README, "toml"))


def production_environment() -> dict[str, str]:
    """production.md's /etc/collector/env, with each ``...`` a secret of the test's."""
    [env_file] = [block for block in code_blocks(PRODUCTION, "") if block.startswith("REDIS_URL=")]
    names = dict(line.split("=", 1) for line in env_file.splitlines() if "=" in line)
    return {name: SECRET if value == "..." else value for name, value in names.items()}


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    """`collector check-config` with production.md's environment file and no secrets of this machine's."""
    env = {key: value for key, value in os.environ.items() if not key.endswith(("_API_KEY", "_TOKEN")) and key != "COLLECTOR_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "collector", "check-config", "--config", str(config)],
        cwd=REPO, env={**env, **production_environment()}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("source", [readme_configuration, reference_configuration], ids=["readme", "configuration.md"])
def test_the_guides_configuration_with_productions_env_file_passes_check_config(source, tmp_path):
    """What a new operator builds by following the guides (the README's or the reference's config, production.md's env file) is valid."""
    config = tmp_path / "collector.toml"
    config.write_text(source())
    result = check_config(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{config}: ok" in result.stdout


def test_the_readme_configures_one_site_with_both_vendors_and_the_proxy_hop(tmp_path):
    """The README's blocks add up to the site it describes: Depict and Commerce, behind one nginx."""
    config = tmp_path / "collector.toml"
    config.write_text(readme_configuration())
    result = check_config(config)
    assert "site my_store: depict, commerce" in result.stdout, result.stdout + result.stderr
    assert re.search(r"^trusted_proxy_hops = 1\b", readme_configuration(), re.MULTILINE)


@pytest.mark.parametrize("guide", GUIDES, ids=[str(path.relative_to(REPO)) for path in GUIDES])
def test_every_relative_link_of_a_guide_leads_to_a_file_and_heading_that_exist(guide):
    """A reader who follows a link of the README or of docs/ lands on the file and the section it names."""
    assert dead_links(guide) == []


def test_the_readme_uses_the_recommended_path_in_every_example():
    """The README shows one way to serve the collector, /_c/ of the shop's host: no example names the subdomain."""
    readme = README.read_text()
    assert SUBDOMAIN not in readme
    assert RECOMMENDED_PREFIX in readme and '<script async src="/_c/t.js" data-site="my_store"></script>' in readme


def test_the_readmes_snippet_tag_is_the_one_production_md_and_the_nginx_file_recommend():
    """The tag the README tells a shop to paste is production.md's recommended one and the nginx file's (b)."""
    [readme_tag] = [line for block in code_blocks(README, "html") for line in block.splitlines() if "t.js" in line]
    production_tags = [line for block in code_blocks(PRODUCTION, "html") for line in block.splitlines() if "t.js" in line]
    assert production_tags[0] == readme_tag, "production.md's first (recommended) tag differs from the README's"
    assert f"#       {readme_tag}" in NGINX.read_text()
