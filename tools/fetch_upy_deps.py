"""Fetch the MicroPython and CircuitPython libraries the firmware needs, pinned by sha256: one source for tests and boards.

PyPI's ``micropython-umqtt.simple`` is an sdist that pip cannot install (it has no
setup.py), and there is no mip index here. So this script asks the package index that pip
is configured with (``PIP_INDEX_URL``, ``pip config``, else pip's own default) for the
archive, checks it against the sha256 pinned below and keeps it in a git-ignored cache
(``.cache/upy-dist``). From it, it unpacks only the library files into ``.cache/upy-lib``,
which the unix-port tests put on ``MICROPYPATH``; the flash tool (tools/flash/build.py)
reads the same archive, checks the same sha256 again, and compiles the same files into
every board build as ``lib/...mpy``. So the boards run what the tests run.

``PINS`` below is the only place the versions and hashes are written down.
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
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / ".cache" / "upy-lib"
#: the CircuitPython libraries (CP_PINS), laid out as a CIRCUITPY drive's lib/ folder
DEFAULT_CP_CACHE = ROOT / ".cache" / "cp-lib"
#: the verified archives themselves (the flash tool builds board libraries from them)
DEFAULT_ARCHIVES = ROOT / ".cache" / "upy-dist"
#: how to (re)fetch, for error messages
FETCH_COMMAND = ".venv/bin/python tools/fetch_upy_deps.py"


@dataclass(frozen=True)
class Pin:
    """One pinned archive (an sdist ``.tar.gz`` or a wheel ``.whl``) and the files to take from it."""

    project: str
    filename: str
    sha256: str
    members: tuple[str, ...]  # paths inside the sdist's top directory, or the wheel's root

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def version(self) -> str:
        """The release, from the file name: ``micropython-umqtt.simple-1.3.4.tar.gz`` -> 1.3.4,
        ``adafruit_circuitpython_ticks-1.1.7-py3-none-any.whl`` -> 1.1.7."""
        if self.is_wheel:
            return self.filename.split("-")[1]
        return self.filename.removesuffix(".tar.gz").rsplit("-", 1)[-1]


PINS = (
    Pin(
        project="micropython-umqtt.simple",
        filename="micropython-umqtt.simple-1.3.4.tar.gz",
        sha256="b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f",
        members=("umqtt/simple.py",),
    ),
)


#: CircuitPython libraries (PyPI wheels of the Adafruit bundle's sources): MiniMQTT and what
#: it imports. The unix-port tests run them from DEFAULT_CP_CACHE; boards get the same files.
CP_PINS = (
    Pin(
        project="adafruit-circuitpython-minimqtt",
        filename="adafruit_circuitpython_minimqtt-8.1.0-py3-none-any.whl",
        sha256="2abfc4ef9a629fc9b43ea85b7afc0a2335c1c0f69fb33a80cb5af18cf494a672",
        members=(
            "adafruit_minimqtt/__init__.py",
            "adafruit_minimqtt/adafruit_minimqtt.py",
            "adafruit_minimqtt/matcher.py",
        ),
    ),
    Pin(
        project="adafruit-circuitpython-connectionmanager",
        filename="adafruit_circuitpython_connectionmanager-3.1.8-py3-none-any.whl",
        sha256="f93e27874a840f728b5cdbb1bcf0aee4e75ed1c0ba46b4562606ac3ac3ea2cca",
        members=("adafruit_connection_manager.py",),
    ),
    Pin(
        project="adafruit-circuitpython-ticks",
        filename="adafruit_circuitpython_ticks-1.1.7-py3-none-any.whl",
        sha256="d6c28f766e40ff12b5791b63824244fa26a6abbd92af22c179c4dae7b54303c5",
        members=("adafruit_ticks.py",),
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


def archive_path(pin: Pin, archives: Path = DEFAULT_ARCHIVES) -> Path:
    return archives / pin.filename


def read_archive(pin: Pin, archives: Path = DEFAULT_ARCHIVES) -> bytes:
    """The cached archive of ``pin``, after checking its sha256 against the pin.

    Raises FetchError, naming the fix, when it is missing or differs from the pin.
    """
    path = archive_path(pin, archives)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FetchError(
            f"the pinned archive {path} is missing: run `{FETCH_COMMAND}` to fetch it "
            "(tools/setup.sh, run by `make setup` and `make test`, does it)"
        ) from None
    except OSError as exc:
        raise FetchError(f"the pinned archive {path} is unreadable ({exc.strerror})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != pin.sha256:
        raise FetchError(
            f"{path} has sha256 {digest}, not the pinned {pin.sha256} (tools/fetch_upy_deps.py): "
            f"refusing to use it. Run `{FETCH_COMMAND}`: it replaces the file with the pinned archive"
        )
    return data


def unpack(pin: Pin, data: bytes) -> dict[str, bytes]:
    """The library files (``pin.members``) of an archive already checked against the pin."""
    if pin.is_wheel:
        return _unpack_wheel(pin, data)
    out: dict[str, bytes] = {}
    top = pin.filename.removesuffix(".tar.gz")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in pin.members:
                try:
                    source = tar.extractfile(f"{top}/{member}")
                except KeyError:
                    source = None
                if source is None:
                    raise FetchError(f"{pin.filename}: {member} is missing from the archive")
                out[member] = source.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise FetchError(f"{pin.filename}: not a readable .tar.gz ({exc})") from None
    return out


def _unpack_wheel(pin: Pin, data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as whl:
            for member in pin.members:
                try:
                    out[member] = whl.read(member)
                except KeyError:
                    raise FetchError(f"{pin.filename}: {member} is missing from the archive") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise FetchError(f"{pin.filename}: not a readable wheel ({exc})") from None
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary name, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_bytes(data)
    part.replace(path)


def download(pin: Pin) -> bytes:
    """The archive from the first configured index that has it, checked against the pin."""
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
        return data
    raise FetchError(f"{pin.filename} was not found on any configured package index: {', '.join(tried)}")


def fetch(pin: Pin, cache: Path, archives: Path = DEFAULT_ARCHIVES) -> list[Path]:
    """Make sure the verified archive is in ``archives`` and its library files, byte for byte,
    in ``cache``; return the unpacked files. Downloads only when the archive is missing or
    differs from the pin."""
    try:
        data = read_archive(pin, archives)
    except FetchError:
        data = download(pin)
        _write_atomic(archive_path(pin, archives), data)
    targets = []
    for member, content in unpack(pin, data).items():
        dest = cache / member
        if not dest.is_file() or dest.read_bytes() != content:
            _write_atomic(dest, content)
        targets.append(dest)
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where to unpack (default: %(default)s)")
    parser.add_argument(
        "--archives",
        type=Path,
        default=DEFAULT_ARCHIVES,
        help="where to keep the verified archives (default: %(default)s)",
    )
    parser.add_argument(
        "--cp-cache",
        type=Path,
        default=DEFAULT_CP_CACHE,
        help="where to unpack the CircuitPython libraries (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        for pins, cache, label in ((PINS, args.cache, "upy-lib"), (CP_PINS, args.cp_cache, "cp-lib")):
            cache.mkdir(parents=True, exist_ok=True)
            for pin in pins:
                for path in fetch(pin, cache, args.archives):
                    print(f"{label}: {path.relative_to(cache)} ({pin.project} {pin.filename}, sha256 ok)")
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
