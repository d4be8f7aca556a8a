"""Fetch the status page's chart library, uPlot, from the npm registry, pinned by its sha512.

The gateway's status page (gateway/web/) draws its live plots with uPlot (MIT licence). It is
not copied into the repository and not loaded from a CDN: this script downloads the pinned
release's tarball from the npm registry (``NPM_CONFIG_REGISTRY`` overrides the registry, as for
npm itself), checks it against the integrity string npm publishes for it
(``npm view uplot@1.6.32 dist.integrity``), and unpacks the two files the page uses and the
licence into the git-ignored ``gateway/web/static/vendor/``. ``tools/setup.sh`` runs it; a wheel
built afterwards carries the files (pyproject ``[tool.setuptools.package-data]``).

Safe to run again: nothing is fetched when the unpacked files match the pin's stamp.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR_DIR = ROOT / "gateway" / "web" / "static" / "vendor"
STAMP = ".pinned.json"
FETCH_COMMAND = ".venv/bin/python tools/fetch_web_assets.py"
DEFAULT_REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class NpmPin:
    """One npm release: its tarball, npm's integrity string, and the files taken from it."""

    name: str
    version: str
    integrity: str  # "sha512-<base64>", as npm publishes it
    members: tuple[str, ...]  # paths inside the tarball's "package/" folder

    def tarball_url(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.name}/-/{self.name}-{self.version}.tgz"


UPLOT = NpmPin(
    name="uplot",
    version="1.6.32",
    integrity="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==",
    members=("dist/uPlot.iife.min.js", "dist/uPlot.min.css", "LICENSE"),
)


class FetchError(Exception):
    """The assets could not be fetched or verified; the message says what to do."""


def check_integrity(pin: NpmPin, data: bytes) -> None:
    algo, _, expected = pin.integrity.partition("-")
    if algo != "sha512":
        raise FetchError(f"{pin.name}: unsupported integrity algorithm {algo!r}")
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != expected:
        raise FetchError(
            f"{pin.name}-{pin.version}.tgz: sha512 {got} differs from the pinned {expected}; "
            "the download is corrupt or not the pinned release (nothing was unpacked)"
        )


def unpack(pin: NpmPin, data: bytes, dest: Path) -> list[Path]:
    """Write the pin's members (flat, by file name) into dest; returns the files written."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in pin.members:
            try:
                info = tar.getmember(f"package/{member}")
            except KeyError:
                raise FetchError(f"{pin.name}-{pin.version}.tgz has no package/{member}") from None
            f = tar.extractfile(info)
            if f is None:
                raise FetchError(f"{pin.name}-{pin.version}.tgz: package/{member} is not a regular file")
            out = dest / Path(member).name
            tmp = out.with_suffix(out.suffix + ".tmp")
            tmp.write_bytes(f.read())
            os.replace(tmp, out)
            written.append(out)
    return written


def _stamp(pin: NpmPin, dest: Path) -> dict[str, object]:
    files = {}
    for member in pin.members:
        path = dest / Path(member).name
        files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return {"name": pin.name, "version": pin.version, "integrity": pin.integrity, "files": files}


def up_to_date(pin: NpmPin, dest: Path) -> bool:
    try:
        saved = json.loads((dest / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return bool(saved == _stamp(pin, dest) and all(saved["files"].values()))


def fetch(pin: NpmPin, dest: Path = VENDOR_DIR, *, registry: str | None = None, force: bool = False) -> bool:
    """Fetch, verify and unpack pin into dest; False when it was already there."""
    if not force and up_to_date(pin, dest):
        return False
    url = pin.tarball_url(registry or os.environ.get("NPM_CONFIG_REGISTRY") or DEFAULT_REGISTRY)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            data = resp.read()
    except OSError as exc:
        raise FetchError(f"cannot download {url} ({exc}); check the network (or NPM_CONFIG_REGISTRY)") from exc
    check_integrity(pin, data)
    unpack(pin, data, dest)
    (dest / STAMP).write_text(json.dumps(_stamp(pin, dest), indent=1))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--dest", type=Path, default=VENDOR_DIR, help="where to unpack (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="fetch again even when the files are there")
    args = parser.parse_args(argv)
    try:
        fetched = fetch(UPLOT, args.dest, force=args.force)
    except FetchError as exc:
        print(f"fetch_web_assets: error: {exc}", file=sys.stderr)
        return 1
    what = "fetched and verified" if fetched else "already present"
    print(f"fetch_web_assets: {UPLOT.name} {UPLOT.version} {what} in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
