"""The README's quickstart, word for word, where the contract says it must work.

Both commands of the README's Quickstart section are run as written with
``bash -c``, in a copy of the source tree, with a clean environment (PATH, HOME,
the machine's pip settings; no REDIS_URL, no COLLECTOR_CONFIG, no venv):

- with Debian's own ``python3``, which is marked externally managed (PEP 668,
  its stdlib holds ``EXTERNALLY-MANAGED``), so a bare ``pip install`` is refused;
- inside an existing, activated virtual environment.

The install command must end in a ``collector dev`` that serves its demo page
and stops on Ctrl-C (SIGINT to the process group, as a terminal sends it) with
one closing line. The test command runs pytest; ``PYTEST_ADDOPTS`` bounds it
to one quick file (the whole suite is what CI runs with that same command).
``COLLECTOR_PORT`` gives ``collector dev`` a free port instead of 8000. The pip
installs take about 10-20 s each with pip's cache, longer on a machine that
downloads everything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from collector.storage.redis_server import free_port
from tests.conftest import REPO

INSTALL_SECONDS = 600  # bounded: a machine without pip's cache downloads every dependency
STOP_SECONDS = 20
DEBIAN_PYTHON = Path("/usr/bin/python3")
COPY_IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", ".benchmarks"
)


def quickstart_commands() -> tuple[str, str]:
    """The README's two quickstart commands: (install and run, install and test)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL)]
    assert len(blocks) == 2, f"the Quickstart should hold two commands, found {blocks}"
    run, test = blocks
    assert "collector dev" in run and "pytest" in test
    return run, test


def externally_managed_python() -> Path | None:
    """Debian's python3 when it is 3.11+, marked externally managed, and can make a venv."""
    if not DEBIAN_PYTHON.exists():
        return None
    probe = (
        "import json, sys, sysconfig, pathlib, importlib.util as u; print(json.dumps({"
        "'version': sys.version_info[:2] >= (3, 11),"
        "'managed': (pathlib.Path(sysconfig.get_path('stdlib')) / 'EXTERNALLY-MANAGED').exists(),"
        "'venv': bool(u.find_spec('venv') and u.find_spec('ensurepip'))}))"
    )
    try:
        found = json.loads(subprocess.run([str(DEBIAN_PYTHON), "-c", probe], capture_output=True, text=True, timeout=30).stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return DEBIAN_PYTHON if all(found.values()) else None


def clean_environment(home: Path, python: Path, port: int) -> dict[str, str]:
    """What a fresh login shell would have: this machine's pip settings, no venv, no collector settings."""
    shims = home / "shims"
    shims.mkdir(exist_ok=True)
    (shims / "python3").unlink(missing_ok=True)
    (shims / "python3").symlink_to(python)
    kept = ("HOME", "LANG", "LC_ALL", "SSL_CERT_FILE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
    environment = {key: value for key, value in os.environ.items() if key in kept or key.startswith("PIP_")}
    environment.update(
        {
            "PATH": f"{shims}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "COLLECTOR_PORT": str(port),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
    )
    return environment


def source_copy(folder: Path) -> Path:
    tree = folder / "first-party-collector"
    shutil.copytree(REPO, tree, ignore=COPY_IGNORED)
    return tree


def run_install_and_dev(tree: Path, command: str, environment: dict[str, str], port: int, before: str = "") -> str:
    """Run the README's first command; once `collector dev` serves its page, Ctrl-C it. Returns dev's output."""
    log = tree.parent / "quickstart.log"
    with open(log, "wb") as output:
        shell = subprocess.Popen(
            ["bash", "-c", before + command],
            cwd=tree, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + INSTALL_SECONDS
        page = None
        while time.monotonic() < deadline and shell.poll() is None and page is None:
            if f"collector dev: open {base}/" in log.read_text(errors="replace"):
                try:
                    with urllib.request.urlopen(f"{base}/", timeout=2) as answer:
                        page = answer.read().decode()
                except OSError:
                    pass
            time.sleep(0.5)
        text = log.read_text(errors="replace")
        assert page is not None, f"`collector dev` never served {base}/ (exit {shell.poll()}):\n{text[-4000:]}"
        assert 'data-site="demo"' in page and "/t.js" in page
        os.killpg(shell.pid, signal.SIGINT)
        try:
            code = shell.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_SECONDS} s after Ctrl-C:\n{log.read_text(errors='replace')[-4000:]}")
        text = log.read_text(errors="replace")
        assert code == 0, f"exit code {code}:\n{text[-4000:]}"
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait(timeout=10)
    dev = text[text.index("collector dev: open") :]
    lines = [line for line in dev.splitlines() if line.strip()]
    assert lines[-1] == "collector dev: stopped" and len(lines) == 2, f"dev said more than its URL and one closing line:\n{dev}"
    return dev


@pytest.fixture
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """A folder for a source copy and its venvs (a few hundred MB), removed afterwards."""
    folder = tmp_path_factory.mktemp("quickstart")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_quickstart_works_with_an_externally_managed_python(workspace):
    """Debian's python3 refuses `pip install` outside a venv (PEP 668); the README's commands work as written."""
    python = externally_managed_python()
    if python is None:
        pytest.skip(f"needs Debian's python3 3.11+ at {DEBIAN_PYTHON}, marked externally managed, with venv (apt-get install python3-venv)")
    run, test = quickstart_commands()
    port = free_port()
    environment = clean_environment(workspace, python, port)
    tree = source_copy(workspace)
    refused = subprocess.run(
        ["bash", "-c", "python3 -m pip --version && python3 -m pip install --dry-run --no-deps ."],
        cwd=tree, env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if refused.stdout.startswith("pip "):  # Debian's pip is there: the premise, a bare install is refused
        assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr, refused.stderr[-2000:]

    run_install_and_dev(tree, run, environment, port)
    assert (tree / ".venv" / "bin" / "collector").exists()

    bounded = {**environment, "PYTEST_ADDOPTS": "-q -p no:cacheprovider tests/collector/config/test_config.py"}
    tested = subprocess.run(["bash", "-c", test], cwd=tree, env=bounded, capture_output=True, text=True, timeout=INSTALL_SECONDS)
    assert tested.returncode == 0, (tested.stdout + tested.stderr)[-4000:]
    assert re.search(r"^\d+ passed", tested.stdout, re.MULTILINE), tested.stdout[-2000:]


def test_the_quickstart_works_inside_an_existing_virtual_environment(workspace):
    """Someone already in a venv runs the same line: it works there too."""
    run, _ = quickstart_commands()
    port = free_port()
    base_venv = workspace / "existing-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base_venv)], check=True, timeout=120)
    environment = clean_environment(workspace, Path(sys.executable), port)
    tree = source_copy(workspace)

    run_install_and_dev(tree, run, environment, port, before=f". {base_venv}/bin/activate && ")
    assert (tree / ".venv" / "bin" / "collector").exists()
