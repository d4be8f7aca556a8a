"""Secrets and file modes: `edgeline-gateway run` and `check-config` as real processes against a
real Mosquitto with the generated configuration (tests/gateway/site_broker.py)."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway.site_broker import SiteBroker
from tests.support.upy import ROOT
from tests.support.waiting import wait_until

PASSWORD = "gw-secret-value-1"


def _gateway(*args: str) -> subprocess.Popen[str]:
    # umask 022, as a shell's: the gateway must not rely on the caller's (or systemd's) umask.
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        umask=0o022,
    )


def _modes(data_dir: Path) -> dict[str, int]:
    paths = [data_dir, *data_dir.rglob("*")]
    return {str(p.relative_to(data_dir)): stat.S_IMODE(p.lstat().st_mode) for p in paths}


def _wait_until_connected(status_file: Path, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    """Until the running gateway's status file says it is connected to the broker."""

    def connected() -> bool:
        if proc.poll() is not None:
            _out, err = proc.communicate()
            raise AssertionError(f"the gateway exited with {proc.returncode}:\n{err}")
        return status_file.exists() and json.loads(status_file.read_text())["ingest"]["connected"]

    wait_until(connected, timeout, f"{status_file} to report a connection", poll=0.05)


def test_run_and_check_config_refuse_a_password_file_others_can_read(tmp_path: Path) -> None:
    with SiteBroker(tmp_path, users={"gateway": PASSWORD}) as broker:
        secret = broker.config.mqtt.password_file
        assert secret is not None
        secret.chmod(0o644)
        expected = f"mqtt.password_file: {secret} has mode 0644, open to other users; run `chmod 600 {secret}`"
        check = _gateway("check-config", "-c", str(broker.toml), "--skip-models")
        run = _gateway("run", "-c", str(broker.toml), "--log-level", "debug")
        try:
            check_out, check_err = check.communicate(timeout=60)
            run_out, run_err = run.communicate(timeout=60)  # it refuses: it does not run
        finally:
            for proc in (check, run):
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        assert (check.returncode, run.returncode) == (2, 2)
        assert f"edgeline-gateway check-config: {expected}" in check_err
        assert f"edgeline-gateway run: {expected}" in run_err
        assert PASSWORD not in check_out + check_err + run_out + run_err
        assert "u'gateway'" not in broker.log_text()  # it never connected
        assert not (broker.config.gateway.data_dir / "status.json").exists()


@pytest.mark.parametrize("existing", [False, True], ids=["new-data-dir", "existing-data-dir"])
def test_run_keeps_its_data_private(tmp_path: Path, existing: bool) -> None:
    with SiteBroker(tmp_path, users={"gateway": PASSWORD}) as broker:
        data_dir = broker.config.gateway.data_dir
        if existing:  # left by a run with the default umask
            data_dir.mkdir()
            data_dir.chmod(0o755)
            (data_dir / "notes.txt").write_text("left behind\n")
            (data_dir / "notes.txt").chmod(0o644)
            (data_dir / "old").mkdir()
            (data_dir / "old").chmod(0o775)
        proc = _gateway("run", "-c", str(broker.toml), "--log-level", "debug")
        try:
            _wait_until_connected(data_dir / "status.json", proc)
            running = _modes(data_dir)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        stopped = _modes(data_dir)
        assert {"registry.sqlite", "rawlog.sqlite", "status.json"} <= set(running), running
        assert any(name.endswith("-wal") for name in running), running  # SQLite's side files too
        for modes in (running, stopped):
            assert modes.pop(".") == 0o700
            assert {name: oct(mode) for name, mode in modes.items() if mode & 0o077} == {}
        assert PASSWORD not in out + err
        assert ("notes.txt had mode 0644; now 0600" in err) == existing  # said, not silently changed
