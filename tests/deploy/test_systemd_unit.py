"""The shipped systemd units (deploy/systemd/): they load without a warning (`systemd-analyze
verify` in a scratch root holding the distribution's units), the gateway's hardening rates well
(`systemd-analyze security --offline=true`), and what MemoryDenyWriteExecute= forbids does not
stop numpy and the TFLite interpreter."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.upy import ROOT

UNIT = ROOT / "deploy" / "systemd" / "edgeline-gateway.service"
MOSQUITTO_DROP_IN = ROOT / "deploy" / "systemd" / "mosquitto.service.d" / "edgeline.conf"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
MAX_EXPOSURE = 3.0  # "OK" in systemd-analyze's scale; measured 1.1 (docs/gateway.md)


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze not found: apt-get install systemd"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def _stub_executables(root: Path, unit_text: str) -> None:
    """Every absolute program an Exec*= line of the unit names, as an empty executable in root."""
    for m in re.finditer(r"^Exec\w+=[-@:+!]*(/\S+)", unit_text, re.MULTILINE):
        stub = root / m.group(1).lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)


def test_units_verify_without_warnings(tmp_path: Path) -> None:
    """`systemd-analyze verify` on a scratch root: the distribution's units (mosquitto.service,
    network-online.target ...) and ours where an install puts them."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    etc = root / "etc" / "systemd" / "system"
    (etc / "mosquitto.service.d").mkdir(parents=True)
    shutil.copy(UNIT, etc / UNIT.name)
    shutil.copy(MOSQUITTO_DROP_IN, etc / "mosquitto.service.d" / MOSQUITTO_DROP_IN.name)
    assert (SYSTEM_UNITS / "mosquitto.service").exists(), "mosquitto.service missing: apt-get install mosquitto"
    for unit in (etc / UNIT.name, root / SYSTEM_UNITS.relative_to("/") / "mosquitto.service"):
        _stub_executables(root, unit.read_text())
    r = _analyze("verify", f"--root={root}", UNIT.name, "mosquitto.service")
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_gateway_unit_security_exposure_is_low() -> None:
    r = _analyze("security", "--offline=true", "--no-pager", str(UNIT))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", r.stdout)
    assert m, r.stdout + r.stderr
    exposure = float(m.group(1))
    assert exposure < MAX_EXPOSURE, f"exposure {exposure} {m.group(2)}:\n{r.stdout}"


def test_gateway_unit_notify_and_watchdog() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line


MDWE_PROBE = """
import ctypes, mmap, sys
from pathlib import Path
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # linux/prctl.h, Linux 6.3+
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_MDWE) failed (errno {ctypes.get_errno()}): kernel older than 6.3?")
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("a writable and executable mapping was allowed")
except PermissionError:
    pass
import numpy as np
from gateway import inference
rng = np.random.default_rng(1)
for name in sys.argv[1:]:
    model = inference.load_model(Path(name))
    model.self_test()
    n, window, channels = 4, model.manifest.input.window, len(model.manifest.input.channels)
    scores = model.score(rng.normal(size=(n, window, channels)).astype(np.float32))
    assert scores.shape[0] == n, scores.shape
    print(name, model.backend, "ok")
"""


def test_models_run_where_memory_may_not_be_writable_and_executable() -> None:
    """MemoryDenyWriteExecute=true refuses memory that is (or becomes) writable and executable.
    The kernel's own form of that rule (prctl PR_SET_MDWE, what systemd 256+ uses) is set in a
    fresh process; numpy and the TFLite interpreter (XNNPACK included) load and score there."""
    models = [str(ROOT / "models" / n) for n in ("vibration_anomaly_int8.json", "basic_motions_float32.json")]
    r = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE, *models], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(" ok") == len(models), r.stdout
