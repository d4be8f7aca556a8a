"""Starts and stops everything the demo runs: two brokers, the gateway, the virtual boards.

Every process is started here and stopped here, by its own handle; nothing else is touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tools.demo.brokers import make_broker
from tools.demo.linkcut import LinkCut
from tools.demo.scenario import DEVICES, GATEWAY_ID, SITE, DeviceSpec, gateway_toml
from tools.flash.cpsettings import settings_toml
from tools.mosquitto import BrokerProcess

ROOT = Path(__file__).resolve().parents[2]
UPY_LIB = ROOT / ".cache" / "upy-lib"
CP_LIB = ROOT / ".cache" / "cp-lib"  # the pinned MiniMQTT and its dependencies
CP_SIM = ROOT / "firmware" / "cpsim"  # CircuitPython's modules on the unix port


class DemoError(RuntimeError):
    """The demo cannot run; the message says what to do."""


def micropython() -> str:
    exe = Path(sys.executable).parent / "micropython"
    if not exe.exists():
        raise DemoError("the MicroPython unix port is missing: run `make demo` (it installs it)")
    if not (UPY_LIB / "umqtt" / "simple.py").exists():
        raise DemoError("umqtt.simple for the unix port is missing: run `python tools/fetch_upy_deps.py`")
    if not (CP_LIB / "adafruit_minimqtt").is_dir():
        raise DemoError("MiniMQTT for the CircuitPython boards is missing: run `python tools/fetch_upy_deps.py`")
    return str(exe)


class VirtualDevice:
    """The real firmware (firmware/main.py) on the unix port with the simulation board."""

    def __init__(self, spec: DeviceSpec, workdir: Path) -> None:
        self.spec = spec
        self.flash = workdir / "devices" / spec.device_id
        self.flash.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "logs" / f"{spec.device_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.duration_s = 0.0

    def start(self, broker: tuple[str, int], duration_s: float) -> None:
        config = self.spec.config(*broker)
        env = dict(os.environ)
        env.update(self.spec.env(duration_s, self.flash))
        if self.spec.circuitpython:
            # A CIRCUITPY drive: settings.toml as the flash tool writes it; boot.py runs at
            # power-on and gives the code write access to the drive.
            (self.flash / "settings.toml").write_text(settings_toml(config))
            env["MICROPYPATH"] = ":".join([str(CP_SIM), str(ROOT / "firmware"), str(ROOT), str(CP_LIB)])
            entry = [str(ROOT / "firmware" / "cp" / "code.py")]
            self._run_once([micropython(), str(ROOT / "firmware" / "cp" / "boot.py")], env)
        else:
            (self.flash / "config.json").write_text(json.dumps(config, indent=1))
            env["MICROPYPATH"] = ":".join([str(ROOT / "firmware"), str(ROOT), str(UPY_LIB)])
            entry = [str(ROOT / "firmware" / "main.py")]
        with open(self.log_path, "ab") as log:
            # The board's flash is its working directory, as on a real board.
            self.started, self.duration_s = time.monotonic(), duration_s
            self.proc = subprocess.Popen(
                [micropython(), *entry], cwd=self.flash, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def _run_once(self, cmd: list[str], env: dict[str, str]) -> None:
        with open(self.log_path, "ab") as log:
            rc = subprocess.run(cmd, cwd=self.flash, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
        if rc.returncode != 0:
            raise DemoError(f"{self.spec.device_id}: {cmd[-1]} failed; see {self.log_path}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def failure(self) -> str | None:
        """Why this board stopped too early (a crash, or a CONFIG/START ERROR that leaves it at
        the REPL, which ends the unix port with 0), or None while it runs or ran its course."""
        if self.proc is None or self.proc.poll() is None:
            return None
        ran = time.monotonic() - self.started
        if self.proc.returncode != 0:
            return f"{self.spec.device_id} exited with {self.proc.returncode} after {ran:.1f} s"
        if ran < self.duration_s:
            return f"{self.spec.device_id} stopped after {ran:.1f} s of a {self.duration_s:.0f} s run"
        return None

    def stats(self) -> dict[str, object]:
        try:
            data = json.loads((self.flash / "stats.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Fleet:
    """The whole demo system on this machine."""

    def __init__(self, workdir: Path | None, broker_kind: str, duration_s: float) -> None:
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="edgeline-demo-"))
        for sub in ("logs", "devices", "gateway", "local-broker", "cloud-broker"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.duration_s = duration_s
        self.local: BrokerProcess = make_broker(self.workdir / "local-broker", broker_kind)
        self.cloud: BrokerProcess = make_broker(self.workdir / "cloud-broker", broker_kind)
        self.uplink = LinkCut((self.cloud.host, self.cloud.port))
        self.devices = [VirtualDevice(spec, self.workdir) for spec in DEVICES]
        self.gateway: subprocess.Popen[bytes] | None = None
        self.gateway_config = self.workdir / "gateway" / "gateway.toml"
        self.status_path = self.workdir / "gateway" / "data" / "status.json"
        self.site = SITE
        self.gateway_id = GATEWAY_ID

    def start_brokers(self) -> None:
        self.local.start()
        self.cloud.start()
        self.uplink.restore()

    def start_gateway(self) -> None:
        data_dir = self.workdir / "gateway" / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.gateway_config.write_text(
            gateway_toml(
                data_dir=data_dir,
                local=(self.local.host, self.local.port),
                cloud=(self.uplink.host, self.uplink.port),  # through the link the demo can cut
            )
        )
        env = dict(os.environ)
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        with open(self.workdir / "logs" / "gateway.log", "ab") as log:
            self.gateway = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "-c", str(self.gateway_config)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_gateway_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gateway is not None and self.gateway.poll() is not None:
                raise DemoError(f"the gateway exited with {self.gateway.returncode}:\n{self.tail('gateway.log')}")
            if self.status_path.exists():
                return
            time.sleep(0.1)
        raise DemoError(f"the gateway did not start within {timeout:.0f} s:\n{self.tail('gateway.log')}")

    def web_url(self) -> str | None:
        """The gateway's status page (its port is chosen at start and written in status.json)."""
        try:
            web = json.loads(self.status_path.read_text()).get("web") or {}
        except (OSError, ValueError):
            return None
        url = web.get("url")
        return url if isinstance(url, str) else None

    def start_devices(self) -> None:
        for dev in self.devices:
            dev.start((self.local.host, self.local.port), self.duration_s)

    def tail(self, log: str, lines: int = 30) -> str:
        try:
            text = (self.workdir / "logs" / log).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_devices(self, timeout: float, tick: Callable[[], None]) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for dev in self.devices:
                why = dev.failure()
                if why is not None:
                    raise DemoError(f"{why}:\n{self.tail(dev.log_path.name)}")
            if not any(d.running for d in self.devices) or time.monotonic() >= deadline:
                return
            tick()
            time.sleep(0.25)

    def stop(self) -> None:
        """Stop everything this demo started (devices, gateway, brokers), in that order."""
        for dev in self.devices:
            dev.stop()
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.send_signal(signal.SIGTERM)
            try:
                self.gateway.wait(15)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
                self.gateway.wait()
        self.uplink.cut()
        for broker in (self.local, self.cloud):
            broker.stop()
