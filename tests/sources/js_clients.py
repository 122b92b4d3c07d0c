"""The vendors' browser clients the drop-in tests load: pinned npm tarballs, fetched with the stdlib.

``python -m tests.sources.js_clients [FOLDER]`` (``.ci/run`` does, with the
system's ``python3``: nothing here needs more than the standard library)
downloads each pinned tarball from the npm registry, checks it against the
``dist.integrity`` (sha512) the registry published for that version, and
unpacks only the browser bundles the tests load into
``FOLDER/<package>@<version>/`` (default ``tests/fixtures/js_clients``,
git-ignored). A package whose folder is complete is skipped, so running it
again costs nothing. The product itself needs neither Node nor these files.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1] / "fixtures" / "js_clients"
REGISTRY = "https://registry.npmjs.org"
COMPLETE = ".complete"  # written last, holding the integrity: the folder is whole


@dataclass(frozen=True)
class Client:
    package: str
    version: str
    integrity: str  # the registry's dist.integrity of the tarball
    files: tuple[str, ...]  # paths inside the tarball's package/ folder

    @property
    def tarball_url(self) -> str:
        name = self.package.rsplit("/", 1)[-1]
        return f"{REGISTRY}/{self.package}/-/{name}-{self.version}.tgz"

    def folder(self, root: Path = FOLDER) -> Path:
        return root / f"{self.package}@{self.version}"

    def path(self, file: str, root: Path = FOLDER) -> Path:
        return self.folder(root) / file


SEGMENT = Client(
    package="@segment/analytics-next",
    version="1.84.3",
    integrity="sha512-5l7cPBzScxhfJ0zdcKQI4daDvMIWWUk7hClT1xGRelnHUltIEoQ9w8+ZpFPoWJMpX8D7IA1nVAfJbpiKi3XaKw==",
    files=(
        # the CDN build a Segment snippet loads (global `analytics`, settings from `${analytics._cdn}/v1/projects/KEY/settings`)
        "dist/umd/standalone.js",
        # the UMD of the npm package (global `AnalyticsNext.AnalyticsBrowser`, `cdnURL` as a load option)
        "dist/umd/index.js",
    ),
)
RUDDERSTACK = Client(
    package="@rudderstack/analytics-js",
    version="3.34.1",
    integrity="sha512-cci768CvaM64Wr/MDDtLF8K49aPy7TwwfwL9G1a2SSfgwL4XfVfGNVT//Mv8yph0a14pPc/Nf5HDWhVjAD5vQg==",
    # the UMD with every plugin bundled in (global `rudderanalytics.RudderAnalytics`): no plugin loaded from a CDN
    files=("dist/npm/modern/bundled/umd/index.js",),
)
CLIENTS = (SEGMENT, RUDDERSTACK)


def is_complete(client: Client, root: Path = FOLDER) -> bool:
    marker = client.folder(root) / COMPLETE
    try:
        if marker.read_text().strip() != client.integrity:
            return False
    except OSError:
        return False
    return all(client.path(file, root).is_file() for file in client.files)


def missing(root: Path = FOLDER) -> list[Client]:
    return [client for client in CLIENTS if not is_complete(client, root)]


def _download(url: str, attempts: int = 3, timeout: float = 60) -> bytes:
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                return answer.read()
        except OSError:
            if attempt == attempts:
                raise
            time.sleep(2 * attempt)
    raise AssertionError("unreachable")


def check_integrity(data: bytes, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise ValueError(f"unsupported integrity {integrity!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise ValueError(f"integrity mismatch: expected sha512-{expected}, got sha512-{actual}")


def unpack(client: Client, data: bytes, root: Path = FOLDER) -> Path:
    """Write only ``client.files`` from the tarball ``data`` into its folder (replaced whole, atomically)."""
    wanted = {f"package/{file}": file for file in client.files}
    contents: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive:
            if member.name in wanted and member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                contents[wanted[member.name]] = extracted.read()
    absent = sorted(set(client.files) - set(contents))
    if absent:
        raise ValueError(f"{client.package}@{client.version}: not in the tarball: {absent}")
    target = client.folder(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        for file, body in contents.items():
            path = staging / file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        (staging / COMPLETE).write_text(client.integrity + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def fetch(folder: Path | str = FOLDER) -> list[Path]:
    """Make every pinned client present in ``folder``; returns the folders of those it had to fetch."""
    root = Path(folder)
    fetched = []
    for client in missing(root):
        data = _download(client.tarball_url)
        check_integrity(data, client.integrity)
        fetched.append(unpack(client, data, root))
    return fetched


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else FOLDER
    for path in fetch(root):
        print(f"js_clients: fetched {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
