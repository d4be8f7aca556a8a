"""Fetch the MicroPython libraries the unix-port tests need, pinned by sha256.

micropython-lib packages are installed on real boards with ``mip``. The unix port used in
the tests has no mip index here, and PyPI's ``micropython-umqtt.simple`` is an sdist that
pip cannot install (it has no setup.py). So this script asks the package index that pip is
configured with (``PIP_INDEX_URL``, ``pip config``, else pip's own default) for the archive,
checks it against the sha256 pinned below, and unpacks only the library files into a
git-ignored cache directory that the tests put on ``MICROPYPATH``.

Nothing fetched here is committed to the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import html.parser
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / ".cache" / "upy-lib"


@dataclass(frozen=True)
class Pin:
    """One pinned sdist and the files to take from it."""

    project: str
    filename: str
    sha256: str
    members: tuple[str, ...]  # paths inside the archive's top directory


PINS = (
    Pin(
        project="micropython-umqtt.simple",
        filename="micropython-umqtt.simple-1.3.4.tar.gz",
        sha256="b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f",
        members=("umqtt/simple.py",),
    ),
)


class FetchError(Exception):
    """A dependency could not be fetched or verified."""


def _pip_config(key: str) -> str | None:
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", key],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return value if out.returncode == 0 and value else None


def index_urls() -> list[str]:
    """The simple-index URLs pip would use, in the order pip would try them."""
    urls: list[str] = []
    primary = os.environ.get("PIP_INDEX_URL") or _pip_config("global.index-url")
    if not primary:
        from pip._internal.models.index import PyPI  # pip's own default index

        primary = PyPI.simple_url
    urls.append(primary)
    extra = os.environ.get("PIP_EXTRA_INDEX_URL") or _pip_config("global.extra-index-url") or ""
    urls.extend(u for u in extra.split() if u)
    return urls


def _normalise(project: str) -> str:
    out = []
    prev_sep = False
    for ch in project.lower():
        if ch in "-_.":
            if not prev_sep:
                out.append("-")
            prev_sep = True
        else:
            out.append(ch)
            prev_sep = False
    return "".join(out)


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            for name, value in attrs:
                if name == "href" and value:
                    self.hrefs.append(value)


def _read(url: str, accept: str | None = None) -> tuple[bytes, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read(), resp.headers.get("Content-Type", "")


def find_file_url(index: str, pin: Pin) -> str | None:
    page = index.rstrip("/") + "/" + _normalise(pin.project) + "/"
    try:
        if page.startswith("file:"):
            path = Path(urllib.request.url2pathname(urllib.parse.urlparse(page).path))
            if not path.is_dir():
                return None
            candidate = path / pin.filename
            return candidate.as_uri() if candidate.exists() else None
        body, ctype = _read(page, "application/vnd.pypi.simple.v1+json, text/html;q=0.1")
    except (OSError, ValueError):
        return None
    if "json" in ctype:
        for entry in json.loads(body).get("files", []):
            if entry.get("filename") == pin.filename:
                return urllib.parse.urljoin(page, str(entry["url"]))
        return None
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    for href in parser.hrefs:
        if urllib.parse.urlparse(href).path.rsplit("/", 1)[-1] == pin.filename:
            return urllib.parse.urljoin(page, href)
    return None


def fetch(pin: Pin, cache: Path) -> list[Path]:
    """Download, verify and unpack one pinned archive; return the unpacked files."""
    stamp = cache / f".{pin.filename}.sha256"
    targets = [cache / m for m in pin.members]
    if stamp.exists() and stamp.read_text().strip() == pin.sha256 and all(t.exists() for t in targets):
        return targets
    tried = []
    for index in index_urls():
        url = find_file_url(index, pin)
        tried.append(index)
        if url is None:
            continue
        data, _ = _read(url)
        digest = hashlib.sha256(data).hexdigest()
        if digest != pin.sha256:
            raise FetchError(
                f"{pin.filename}: sha256 {digest} does not match the pinned {pin.sha256}; "
                "refusing to use it (was the index tampered with, or the pin changed?)"
            )
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            top = pin.filename.removesuffix(".tar.gz")
            for member in pin.members:
                source = tar.extractfile(f"{top}/{member}")
                if source is None:
                    raise FetchError(f"{pin.filename}: {member} is missing from the archive")
                dest = cache / member
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(source.read())
        stamp.write_text(pin.sha256 + "\n")
        return targets
    raise FetchError(f"{pin.filename} was not found on any configured package index: {', '.join(tried)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where to unpack (default: %(default)s)")
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    try:
        for pin in PINS:
            for path in fetch(pin, args.cache):
                print(f"upy-lib: {path.relative_to(args.cache)} ({pin.project} {pin.filename}, sha256 ok)")
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
