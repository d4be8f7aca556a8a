"""The shell and Python blocks of README.md and docs/*.md run as written.

A fenced ```sh / ```console / ```python block preceded by a ``<!-- run -->`` line is run here,
in a scratch copy of the checkout (its top-level entries linked, plus devices.toml copied from
devices.example.toml with placeholder secrets, as docs/flashing.md says), with the venv's programs
first on PATH (what ``. .venv/bin/activate`` does), ``sudo`` dropped, ``/tmp/...`` moved into the
test's directory, and /etc and /opt overlays whose writes land in the test's directory (a private
mount namespace; ``/opt/edgeline`` is the copy): nothing outside the test's directory changes.
Blocks marked ``<!-- run: NAME -->`` are one sequence: those of a document with the same NAME run
in their order in one scratch directory, each with the time limit of one block (a worked example
whose steps use the files of the steps before). Every other block is listed in NOT_RUN below with
the reason; a new block must be one or the other.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.upy import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGS = ("sh", "console", "python", "bash")
RUN_MARK = re.compile(r"<!-- run(?:: ([\w-]+))? -->")
TIMEOUT_S = 90

# (document, first command of the block): why the test does not run it.
NOT_RUN: dict[tuple[str, str], str] = {
    ("README.md", "make demo"): "the demo runs for minutes; tests/test_demo.py runs its short form",
    (
        "README.md",
        ".venv/bin/edgeline-flash build --arch xtensawin",
    ): "writes build/ of the checkout; tests/test_board_build.py builds",
    ("README.md", "make test"): "the whole test suite",
    (
        "docs/circuitpython.md",
        "python -m tools.flash build --arch circuitpython",
    ): "writes build/ of the checkout and signs with a release key; tests/flash/test_circuitpy.py builds and packs",
    ("README.md", "make bench"): "every benchmark, full size (minutes)",
    (
        "docs/flashing.md",
        "python -m tools.flash provision --device pump-01 --config devices.toml",
    ): "needs a board on a serial port",
    (
        "docs/flashing.md",
        "python -m tools.flash circuitpy --device cp-01 --config devices.toml --drive /media/$USER/CIRCUITPY",
    ): "needs a CircuitPython board's drive",
    (
        "docs/flashing.md",
        "python -m tools.flash ca revoke pump-01 --config devices.toml",
    ): "needs a CA that issued pump-01 a certificate; tests/flash/test_device_certs.py runs the ca commands",
    (
        "docs/flashing.md",
        "mkdir -p /tmp/flash",
    ): "interactive: a REPL on a pseudo-terminal whose name the first command prints; the Python form below runs",
    (
        "docs/forwarding.md",
        "from gateway.forward import ForwardConfig, Forwarder",
    ): "API sketch: toml, handle_cloud_command stand for the caller's objects",
    (
        "docs/gateway.md",
        "edgeline-gateway broker-config -c /etc/edgeline/gateway.toml --out-dir DIR",
    ): "DIR is a placeholder; the Raspberry Pi steps and the README run broker-config",
    (
        "docs/gateway.md",
        "sudo apt install mosquitto python3-venv git",
    ): "installs packages, adds a system user, clones the repository",
    (
        "docs/gateway.md",
        "sudo install -m 644 /etc/edgeline/broker/edgeline.conf /etc/mosquitto/conf.d/edgeline.conf",
    ): "needs the mosquitto and edgeline users and a running systemd",
    ("docs/gateway.md", "systemctl status mosquitto edgeline-gateway"): "needs the installed, running services",
    (
        "docs/forwarding.md",
        "edgeline-gateway tpm-key --tcti device:/dev/tpmrm0 --key-out /etc/edgeline/cloud.key --csr-out cloud.csr --cn gw-plant1",
    ): "needs a TPM at /dev/tpmrm0; tests/gateway/test_tpm.py runs tpm-key against swtpm",
    ("docs/gateway.md", ".venv/bin/pytest tests/gateway"): "the gateway test suite and benchmarks (minutes)",
    (
        "docs/models.md",
        "from gateway.inference import load_model",
    ): "API sketch: birth_channels and windows stand for the caller's data",
}


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    text: str
    run: bool
    sequence: str = ""  # NAME of <!-- run: NAME -->

    @property
    def first(self) -> str:
        for raw in self.text.splitlines():
            line = raw.strip().removeprefix("$ ")
            if line and not line.startswith("#"):
                return re.sub(r"\s+#.*$", "", line).strip()
        return ""


def blocks() -> list[Block]:
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"^```(\w*)", lines[i])
            if not m:
                i += 1
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if m.group(1) in LANGS:
                before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
                text = "\n".join(lines[i + 1 : end]) + "\n"
                mark = RUN_MARK.fullmatch(before)
                doc = str(path.relative_to(ROOT))
                found.append(
                    Block(doc, i + 1, m.group(1), text, mark is not None, (mark.group(1) or "") if mark else "")
                )
            i = end + 1
    return found


def test_every_block_is_run_or_listed_with_a_reason() -> None:
    all_blocks = blocks()
    unlisted = [f"{b.doc}:{b.line}: {b.first}" for b in all_blocks if not b.run and (b.doc, b.first) not in NOT_RUN]
    assert not unlisted, "mark these <!-- run --> or add them to NOT_RUN with the reason:\n" + "\n".join(unlisted)
    keys = {(b.doc, b.first) for b in all_blocks if not b.run}
    stale = [k for k in NOT_RUN if k not in keys]
    assert not stale, f"NOT_RUN names blocks that are gone: {stale}"
    runs = {b.doc for b in all_blocks if b.run}
    assert {"README.md", "docs/flashing.md", "docs/gateway.md"} <= runs, runs


def _scratch_checkout(tmp_path: Path) -> Path:
    work = tmp_path / "checkout"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", "devices.toml", "secrets"):
            (work / entry.name).symlink_to(entry)
    (work / "devices.toml").write_text((ROOT / "devices.example.toml").read_text())
    secrets = work / "secrets"
    secrets.mkdir()
    for name in ("wifi.txt", "pump-01.broker", "tank-03.broker"):
        (secrets / name).write_text("placeholder-secret\n")
        (secrets / name).chmod(0o600)
    return work


def _as_written(text: str, tmp: Path) -> str:
    text = re.sub(r"(?m)^(\s*)(?:\$ )?sudo (?:-u \w+ )?", r"\1", text)
    return re.sub(r"(?<![\w/.])/tmp/", f"{tmp}/", text)


def _cases() -> list[list[Block]]:
    """Each <!-- run --> block alone, and each <!-- run: NAME --> sequence of a document in order."""
    cases: list[list[Block]] = []
    sequences: dict[tuple[str, str], list[Block]] = {}
    for b in blocks():
        if not b.run:
            continue
        if not b.sequence:
            cases.append([b])
        elif (b.doc, b.sequence) in sequences:
            sequences[b.doc, b.sequence].append(b)
        else:
            cases.append(sequences.setdefault((b.doc, b.sequence), [b]))
    return cases


RUN_CASES = _cases()


def _case_id(case: list[Block]) -> str:
    b = case[0]
    return f"{b.doc}:{b.line}" + (f":{b.sequence}" if b.sequence else "")


@pytest.mark.parametrize("case", RUN_CASES, ids=[_case_id(c) for c in RUN_CASES])
def test_block_runs_as_written(case: list[Block], tmp_path: Path) -> None:
    work = _scratch_checkout(tmp_path)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    for d in ("etc-upper/edgeline", "etc-work", "opt-upper", "opt-work"):
        (tmp_path / d).mkdir(parents=True)  # /etc/edgeline: made by step 1 of the Pi install (not run)
    (tmp_path / "opt-upper" / "edgeline").symlink_to(work)
    for block in case:
        _run_block(block, tmp_path, work, tmp)


def _run_block(block: Block, tmp_path: Path, work: Path, tmp: Path) -> None:
    text = _as_written(block.text, tmp)
    if block.lang == "python":
        (tmp_path / "snippet.py").write_text(text)
        command = f'python "{tmp_path / "snippet.py"}"'
    else:
        lines = [ln.removeprefix("$ ") for ln in text.splitlines() if block.lang != "console" or ln.startswith("$ ")]
        (tmp_path / "snippet.sh").write_text("\n".join(lines) + "\n")
        command = f'bash -euo pipefail "{tmp_path / "snippet.sh"}"'
    # /etc and /opt as overlays (writes go to *-upper), in a mount namespace of this command only.
    mounts = " && ".join(
        f'mount -t overlay overlay -o lowerdir=/{d},upperdir="{tmp_path}/{d}-upper",workdir="{tmp_path}/{d}-work" /{d}'
        for d in ("etc", "opt")
    )
    sandbox = f"{mounts} && {command}"
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    venv = ROOT / ".venv"
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "PYTHONPATH": str(work),
        "HOME": str(tmp_path),
    }
    env.pop("EDGELINE_GATEWAY_CONFIG", None)
    r = subprocess.run(
        [*unshare, "sh", "-c", sandbox],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert r.returncode == 0, (
        f"{block.doc}:{block.line} failed ({r.returncode}):\n{text}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    )
