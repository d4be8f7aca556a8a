"""The fleet demo's story: which virtual devices run, what goes wrong, and when.

Times are fractions of the run's duration so that a short test run and a long show tell the
same story: a pump develops a bearing fault, another pump loses its broker for a while, the
cloud link is cut and comes back, and an alert on a pump closes the tank's valve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT_DIR = Path(__file__).resolve().parents[2]

SITE = "demo"
GATEWAY_ID = "demo-gw"
VIBRATION_RATE_HZ = 100  # the vibration model's manifest expects 100 Hz
VIBRATION_MODEL = ROOT_DIR / "models" / "vibration_anomaly_int8.json"


@dataclass(frozen=True)
class DeviceSpec:
    device_id: str
    role: str
    sensors: list[dict[str, Any]]
    rate_hz: float
    batch: int
    outputs: list[dict[str, Any]] = field(default_factory=list)
    fault_at: float | None = None  # fraction of the run when a bearing fault starts
    link_down: tuple[float, float] | None = None  # fractions of the run without network
    seed: int = 1
    board: str = "esp32_devkit"  # the virtual board's profile (boards/esp32_devkit.py, pico_w.py, cp_*.py)

    @property
    def circuitpython(self) -> bool:
        """CircuitPython boards (boards/cp_*.py) run firmware/cp/code.py with settings.toml."""
        return self.board.startswith("cp_")

    def config(self, broker_host: str, broker_port: int, tls: dict[str, str] | None = None) -> dict[str, Any]:
        """The board's configuration; ``tls``: its ``broker.tls`` files and server name."""
        broker: dict[str, Any] = {"host": broker_host, "port": broker_port, "timeout_ms": 1000, "keepalive_s": 10}
        if tls is not None:
            broker["tls"] = tls
        return {
            "device_id": self.device_id,
            "site": SITE,
            "broker": broker,
            "sample": {"rate_hz": self.rate_hz, "batch": self.batch},
            "sensors": self.sensors,
            "outputs": self.outputs,
            # within esp32_devkit's HEAP_BUDGET (24 KB): 8 RAM frames of 6 channels x 32 samples
            # (~4 KB) and the RAM index of 512 flash frames (~9 KB)
            "queue": {"ram_frames": 8, "flash_frames": 512, "ack_timeout_s": 5, "publish_per_loop": 16},
            "backoff": {"min_ms": 250, "max_ms": 2000},
            "health_s": 2,
            "watchdog_ms": 0,
        }

    def env(self, duration_s: float, flash: Path) -> dict[str, str]:
        env = {
            "EDGELINE_SIM_BOARD": self.board,
            "EDGELINE_SIM_DIR": str(flash),
            "EDGELINE_SIM_DURATION_S": f"{duration_s:.1f}",
            "EDGELINE_SIM_DRAIN_S": "20",
            "EDGELINE_SIM_SEED": str(self.seed),
            "EDGELINE_SIM_STATS": str(flash / "stats.json"),
        }
        if self.fault_at is not None:
            env["EDGELINE_SIM_FAULTS"] = f"bearing@{self.fault_at * duration_s:.1f}:0.8"
        if self.link_down is not None:
            a, b = self.link_down
            env["EDGELINE_SIM_LINK_DOWN"] = f"{a * duration_s:.1f}-{b * duration_s:.1f}"
        return env

    def describe(self, duration_s: float) -> str:
        parts = [self.role]
        if self.fault_at is not None:
            parts.append(f"bearing fault from {self.fault_at * duration_s:.0f} s")
        if self.link_down is not None:
            a, b = self.link_down
            parts.append(f"no network {a * duration_s:.0f}-{b * duration_s:.0f} s")
        return ", ".join(parts)


IMU = {"type": "mpu6050", "name": "imu"}

DEVICES = (
    DeviceSpec("pump-01", "MPU-6050 vibration", [IMU], VIBRATION_RATE_HZ, 32, fault_at=0.4, seed=11),
    DeviceSpec("pump-02", "MPU-6050 vibration", [IMU], VIBRATION_RATE_HZ, 32, link_down=(0.2, 0.4), seed=22),
    DeviceSpec(
        "tank-03",
        "level sensor (ADC) + flow meter (pulses) + valve (output)",
        [
            {"type": "analog", "name": "level", "pin": 26, "unit": "m", "scale": 2.0 / 65535},
            {"type": "pulse", "name": "flow", "pin": 15, "mode": "count", "unit": "pulses", "sim_hz": 12.0},
        ],
        10,
        20,
        outputs=[{"name": "valve", "pin": 16}],
        seed=33,
        board="pico_w",
    ),
    DeviceSpec(
        "room-04",
        "CircuitPython ESP32-S3: temperature (analogio) + door (keypad events)",
        [
            {"type": "analog", "name": "temp", "pin": 4, "unit": "degC", "scale": 0.01, "offset": -100.0},
            {"type": "pulse", "name": "door", "pin": 14, "mode": "event", "debounce_ms": 20, "sim_hz": 0.5},
        ],
        10,
        20,
        seed=44,
        board="cp_esp32s3",  # the CircuitPython board the firmware fits (docs/circuitpython.md, Memory)
    ),
)

CLOUD_CUT = (0.5, 0.7)  # fractions of the run when the cloud broker is down


def gateway_toml(
    *, data_dir: Path, local: tuple[str, int], cloud: tuple[str, int], local_tls: str = "", forward_tls: str = ""
) -> str:
    """The gateway's configuration for the demo (one TOML file, like on a Pi). ``local_tls``
    replaces the plain [mqtt] table with the sections of mutual TLS toward the devices
    (tools/demo/security.py), ``forward_tls`` is the [forward.tls] table toward the cloud."""
    mqtt = (
        local_tls
        or f"""
[mqtt]
host = "{local[0]}"
port = {local[1]}
"""
    )
    cfg = f"""
[gateway]
id = "{GATEWAY_ID}"
site = "{SITE}"
data_dir = {json.dumps(str(data_dir))}
status_interval_s = 0.5
{mqtt}
[summary]
interval_s = 5

# The raw log and the forward queue are encrypted on disk (AES-256-GCM; the data key sealed by
# a 0600 key file here, by the TPM on a gateway that has one: docs/gateway.md).
[encryption]
enabled = true

# The status page and /metrics on a free port of this machine (status.json says which).
[web]
port = 0

# Home Assistant MQTT discovery: every board appears in Home Assistant by itself, with the
# valve's output as a switch (docs/gateway.md, "Home Assistant").
[homeassistant]
enabled = true

[[pipelines]]
name = "vibration"
model = {json.dumps(str(VIBRATION_MODEL))}
devices = ["pump-*"]
# The firmware names each channel <sensor>_<axis>; the model's manifest calls them ax..gz.
channels = ["imu_ax", "imu_ay", "imu_az", "imu_gx", "imu_gy", "imu_gz"]

[[rules]]
name = "close-valve"
on_alert_from = "pump-*"
pipeline = "vibration"
device = "tank-03"
output = 0
value = 1
duration_s = 5.0
cooldown_s = 10.0

[forward]
host = "{cloud[0]}"
port = {cloud[1]}
backoff_min_s = 0.2
backoff_max_s = 2.0
{forward_tls}"""
    return cfg.lstrip()
