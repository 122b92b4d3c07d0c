"""The guides build what they say: the README's configuration and production.md's environment file pass check-config."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

README = REPO / "README.md"
PRODUCTION = REPO / "docs" / "production.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
SECRET = "a-test-secret-of-32-characters-x"


def code_blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(path.read_text()) if lang == language]


def readme_configuration() -> str:
    """The README's full configuration sample (the one that shows [collector.delivery] and a site)."""
    [sample] = [block for block in code_blocks(README, "toml") if "[collector.delivery]" in block and "[sites." in block]
    return sample


def production_environment() -> dict[str, str]:
    """production.md's /etc/collector/env, with each ``...`` a secret of the test's."""
    [env_file] = [block for block in code_blocks(PRODUCTION, "") if block.startswith("REDIS_URL=")]
    names = dict(line.split("=", 1) for line in env_file.splitlines() if "=" in line)
    return {name: SECRET if value == "..." else value for name, value in names.items()}


def test_the_readme_configuration_with_productions_env_file_passes_check_config(tmp_path):
    """What a new operator builds by following the guides (the README's config, production.md's env file) is valid."""
    config = tmp_path / "collector.toml"
    config.write_text(readme_configuration())
    env = {key: value for key, value in os.environ.items() if not key.endswith(("_API_KEY", "_TOKEN")) and key != "COLLECTOR_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "collector", "check-config", "--config", str(config)],
        cwd=REPO, env={**env, **production_environment()}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{config}: ok" in result.stdout
