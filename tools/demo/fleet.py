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
from typing import Any

from tools.demo import security
from tools.demo.brokers import make_broker, mosquitto_available
from tools.demo.linkcut import LinkCut
from tools.demo.scenario import DEVICES, GATEWAY_ID, SITE, DeviceSpec, gateway_toml
from tools.demo.updates import CloudClient, DemoUpdates
from tools.flash.cpsettings import settings_toml
from tools.mosquitto import BrokerProcess, Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[2]
RESET_EXITS = (4, 137)  # the simulation board's machine.reset and watchdog reset (boards/sim.py)
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
        self.resets = 0
        self._cmd: list[str] = []
        self._env: dict[str, str] = {}

    def start(
        self,
        broker: tuple[str, int],
        duration_s: float,
        tls: security.DemoTLS | None = None,
        updates: DemoUpdates | None = None,
    ) -> None:
        files = security.provision_board(tls, self.spec, self.flash) if tls is not None else None
        if updates is not None:  # ota.key, as `edgeline-flash provision` / `circuitpy` write it
            updates.provision(self.spec.device_id, self.flash)
        config = self.spec.config(*broker, tls=files)
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
            # firmware/main.py is the A/B loader: after an update over the air it runs the
            # firmware in the board's slot (a/ or b/ in its flash), else the code above
            entry = [str(ROOT / "firmware" / "main.py")]
        self._cmd, self._env = [micropython(), *entry], env
        self.started, self.duration_s = time.monotonic(), duration_s
        self._spawn()

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            # The board's flash is its working directory, as on a real board.
            self.proc = subprocess.Popen(self._cmd, cwd=self.flash, env=self._env, stdout=log, stderr=subprocess.STDOUT)

    def restart_after_reset(self) -> bool:
        """A board that reset itself (machine.reset after a firmware update, or its watchdog)
        starts again as a real one does, for the rest of its run; True when it did."""
        if self.proc is None or self.proc.poll() not in RESET_EXITS:
            return False
        left = self.duration_s - (time.monotonic() - self.started)
        if left < 1.0:
            return False
        self.resets += 1
        self._env = {**self._env, "EDGELINE_SIM_DURATION_S": f"{left:.1f}"}
        self._spawn()
        return True

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
        if self.proc.returncode in RESET_EXITS and ran >= self.duration_s - 1.0:
            return None  # reset in its last second: not started again
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
        self.devices = [VirtualDevice(spec, self.workdir) for spec in DEVICES]
        self.gateway: subprocess.Popen[bytes] | None = None
        self.gateway_config = self.workdir / "gateway" / "gateway.toml"
        self.data_dir = self.workdir / "gateway" / "data"
        self.status_path = self.data_dir / "status.json"
        self.site = SITE
        self.gateway_id = GATEWAY_ID
        # Mutual TLS on every hop with Mosquitto (docs/security.md); amqtt, the stand-in where
        # Mosquitto is missing, runs the demo in plain TCP and the report says so.
        with_tls = broker_kind == "mosquitto" or (broker_kind == "auto" and mosquitto_available())
        self.tls = security.make(self.workdir / "pki", site=SITE, gateway_id=GATEWAY_ID) if with_tls else None
        # The boards' OTA keys live where the flash tool keeps them: beside their TLS files.
        keys_dir = self.tls.site_ca.directory / "devices" if self.tls is not None else self.workdir / "ota-keys"
        self.updates = DemoUpdates(self.workdir, keys_dir)
        if self.tls is None:
            self.cloud: BrokerProcess = make_broker(self.workdir / "cloud-broker", broker_kind)
            self.uplink = LinkCut((self.cloud.host, self.cloud.port))
            self.local: BrokerProcess = make_broker(self.workdir / "local-broker", broker_kind)
            self.device_addr = (self.local.host, self.local.port)
            self._write_gateway_config()
        else:
            self.cloud = Mosquitto(self.workdir / "cloud-broker", extra_conf=security.cloud_listener(self.tls))
            self.uplink = LinkCut((self.cloud.host, self.cloud.port))
            loopback = ("127.0.0.1", free_port())
            self.device_addr = ("127.0.0.1", free_port())
            while self.device_addr == loopback:
                self.device_addr = ("127.0.0.1", free_port())
            conf_dir = self.workdir / "local-broker" / "conf.d"
            private_conf = security.gateway_toml(self.tls, local=loopback, device=self.device_addr, conf_dir=conf_dir)
            self._write_gateway_config(private_conf, security.forward_tls_toml(self.tls))
            self.local = security.local_broker(self.tls, self.workdir / "local-broker", self.gateway_config)

    def _write_gateway_config(self, local_tls: str = "", forward_tls: str = "") -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.gateway_config.write_text(
            gateway_toml(
                data_dir=self.data_dir,
                local=(self.local.host, self.local.port) if not local_tls else ("", 0),  # local_tls has [mqtt]
                cloud=(self.uplink.host, self.uplink.port),  # through the link the demo can cut
                local_tls=local_tls,
                forward_tls=forward_tls,
            )
            + self.updates.gateway_toml()
        )

    def release_client(self) -> CloudClient:
        """The release side's way to the cloud broker (not through the link the demo cuts)."""
        if self.tls is None:
            return CloudClient(self.cloud.host, self.cloud.port)
        r = self.tls.release
        return CloudClient(self.cloud.host, self.cloud.port, ca=self.tls.cloud.ca, cert=r.cert, key=r.key)

    @property
    def monitor_user(self) -> tuple[str, str] | None:
        """The demo observer's user on the local broker's loopback listener (with TLS)."""
        if self.tls is None:
            return None
        return security.MONITOR_USER, self.tls.secret(security.MONITOR_USER).read_text().strip()

    @property
    def monitor_cloud_tls(self) -> tuple[Path, Path, Path] | None:
        """The observer's CA, certificate and key toward the cloud broker (with TLS)."""
        if self.tls is None:
            return None
        return self.tls.cloud.ca, self.tls.observer.cert, self.tls.observer.key

    def security_report(self, status: dict[str, Any]) -> dict[str, object]:
        """Which hops ran mutual TLS, from the brokers' own logs: each board's session on the
        device listener under its certificate's CN, the gateway's on the cloud broker under its;
        and the gateway's encryption at rest, from its status."""
        at_rest = status.get("encryption")
        if self.tls is None:
            why = f"{self.local.kind} runs plain TCP here; install Mosquitto for mutual TLS"
            return {"mtls": False, "why": why, "at_rest": at_rest}
        devices = security.tls_sessions(self.local.log_text(), self.device_addr[1])
        cloud = security.tls_sessions(self.cloud.log_text(), self.cloud.port)
        boards_ok = all(devices.get(d.spec.device_id) == d.spec.device_id for d in self.devices)
        return {
            "mtls": boards_ok and GATEWAY_ID in cloud.values(),
            "device_listener": f"{self.device_addr[0]}:{self.device_addr[1]}",
            "server_name": security.SERVER_NAME,
            "devices": devices,  # client id -> username (the certificate's CN)
            "cloud": cloud,
            "at_rest": at_rest,
        }

    def start_brokers(self) -> None:
        self.local.start()
        self.cloud.start()
        self.uplink.restore()

    def start_gateway(self) -> None:
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
            dev.start(self.device_addr, self.duration_s, self.tls, self.updates)

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
                dev.restart_after_reset()
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
