"""edgeline-flash provision/deploy/status to the virtual board through the real mpremote."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shared_protocol import BIRTH
from shared_protocol.decode import decode
from tests.support.mosquitto import Mosquitto, free_port
from tools.fetch_upy_deps import PINS
from tools.flash.board import BOARD_MANIFEST, Board
from tools.flash.build import ROOT, BuildManifest, find_mpy_cross
from tools.flash.cli import main
from tools.flash.devices import firmware_validator
from tools.vboard import VirtualBoard

BROKER_SECRET = "vb1-Broker-Secret-93e1"
UMQTT_CACHE = ROOT / ".cache" / "upy-lib"
UMQTT_PIN = next(pin for pin in PINS if pin.project == "micropython-umqtt.simple")
PINNED_LINE = f"umqtt.simple {UMQTT_PIN.version} (pinned, sha256 {UMQTT_PIN.sha256}) -> lib/umqtt/simple.mpy"


def devices_file(tmp_path: Path, broker_port: int) -> Path:
    secret = tmp_path / "secrets" / "vb1.broker"
    secret.parent.mkdir()
    secret.write_text(BROKER_SECRET + "\n")
    secret.chmod(0o600)
    path = tmp_path / "devices.toml"
    path.write_text(
        textwrap.dedent(f"""
        [devices.vb1]
        arch = "native"
        [devices.vb1.config]
        site = "lab"
        broker = {{ host = "127.0.0.1", port = {broker_port}, user = "vb1", password_file = "secrets/vb1.broker" }}
        sample = {{ rate_hz = 20, batch = 8 }}
        sensors = [{{ type = "analog", name = "temp", pin = 34 }}]
        health_s = 5
        """)
    )
    return path


def flash_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.flash", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        check=False,
    )


def mpremote(port: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", port, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def flash_files(flash: Path) -> dict[str, bytes]:
    return {p.relative_to(flash).as_posix(): p.read_bytes() for p in sorted(flash.rglob("*")) if p.is_file()}


def test_provision_deploys_build_config_and_umqtt_then_skips_unchanged(
    tmp_path: Path, board: VirtualBoard, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory(users={"vb1": BROKER_SECRET})
    devices = devices_file(tmp_path, broker.port)
    build_dir = tmp_path / "build"
    result = flash_cli(
        "provision",
        "--device",
        "vb1",
        "--config",
        str(devices),
        "--port",
        board.port,
        "--build-dir",
        str(build_dir),
        "--no-reset",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert BROKER_SECRET not in output
    assert PINNED_LINE in output
    assert "mip" not in output
    manifest = BuildManifest.load(build_dir)
    for entry in manifest.files:
        assert f"write     {entry.path} ({entry.size} B)" in output

    flash = board.flash_dir
    files = flash_files(flash)
    for entry in manifest.files:
        assert files[entry.path] == (build_dir / entry.path).read_bytes()
    assert "lib/umqtt/simple.py" not in files
    assert "lib/umqtt/simple.mpy" in {e.path for e in manifest.files}  # compiled from the pinned archive
    config = json.loads(files["config.json"])
    assert config["device_id"] == "vb1"
    assert config["broker"]["password"] == BROKER_SECRET
    full = firmware_validator()(config, False)
    assert isinstance(full, dict)
    recorded = json.loads(files[BOARD_MANIFEST])["files"]
    assert set(recorded) == {e.path for e in manifest.files}
    assert all(recorded[e.path] == e.sha256[:16] for e in manifest.files)
    assert not any(p.endswith(".part") for p in files)

    # A second deploy changes nothing on the board.
    mtimes = {p: (flash / p).stat().st_mtime_ns for p in files}
    again = flash_cli(
        "deploy",
        "--port",
        board.port,
        "--arch",
        "native",
        "--build-dir",
        str(build_dir),
        "--no-build",
        "--no-reset",
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert PINNED_LINE in again.stdout
    assert "unchanged lib/umqtt/simple.mpy" in again.stdout
    assert f"deploy: 0 written, {len(manifest.files)} unchanged, 0 removed" in again.stdout
    assert {p: (flash / p).stat().st_mtime_ns for p in files} == mtimes

    # The deployed package and umqtt import on the board, from the compiled files.
    check = mpremote(
        board.port,
        "exec",
        "import shared_protocol, shared_protocol.header as h, umqtt.simple as u\n"
        "print(shared_protocol.PROTOCOL_VERSION, h.__file__, u.__file__)",
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["1", "shared_protocol/header.mpy", f"{board.flash_dir}/lib/umqtt/simple.mpy"]

    status = flash_cli("status", "--port", board.port, "--arch", "native", "--build-dir", str(build_dir))
    assert status.returncode == 0, status.stderr
    assert f"{len(manifest.files)} ok, 0 changed, 0 missing, 0 extra" in status.stdout
    assert "config.json: present" in status.stdout


def test_provisioned_board_runs_the_firmware_and_publishes_birth(
    tmp_path: Path, board: VirtualBoard, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory(users={"vb1": BROKER_SECRET, "gw": "gw-pass"})
    births: list[bytes] = []
    got_birth = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        births.append(bytes(msg.payload))
        got_birth.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-sub")
    sub.username_pw_set("gw", "gw-pass")
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe("el/lab/vb1/birth", qos=1)
    sub.loop_start()
    try:
        result = flash_cli(
            "provision",
            "--device",
            "vb1",
            "--config",
            str(devices_file(tmp_path, broker.port)),
            "--port",
            board.port,
            "--build-dir",
            str(tmp_path / "build"),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert PINNED_LINE in result.stdout
        assert "soft reset: main.py started" in result.stdout
        assert BROKER_SECRET not in result.stdout + result.stderr
        # main.py ran on the board with the written config.json and the pinned umqtt
        assert got_birth.wait(30), board.transcript()[-2000:]
    finally:
        sub.loop_stop()
        sub.disconnect()
    frame = decode(births[0])
    assert frame.type == BIRTH
    assert BROKER_SECRET.encode() not in board.transcript()


def test_deploy_removes_stale_and_shadowing_files_and_verify_finds_tampering(
    tmp_path: Path, board: VirtualBoard
) -> None:
    build_dir = tmp_path / "build"
    base = ["--port", board.port, "--arch", "native", "--build-dir", str(build_dir), "--no-reset"]
    assert main(["deploy", *base]) == 0
    flash = board.flash_dir
    manifest = BuildManifest.load(build_dir)
    # a file from an older build, recorded in the board manifest
    (flash / "sensorfw" / "old_module.mpy").write_bytes(b"M\x06old")
    doc = json.loads((flash / BOARD_MANIFEST).read_text())
    doc["files"]["sensorfw/old_module.mpy"] = "0" * 16
    (flash / BOARD_MANIFEST).write_text(json.dumps(doc))
    # a hand-copied source that MicroPython would import instead of the .mpy
    (flash / "shared_protocol" / "header.py").write_text("raise ImportError('stale source')\n")
    # a deployed file changed behind the tool's back, same size
    victim = flash / "shared_protocol" / "topics.mpy"
    original = victim.read_bytes()
    victim.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    user_file = flash / "notes.txt"
    user_file.write_text("mine\n")

    result = flash_cli("deploy", *base, "--no-build")
    assert result.returncode == 0, result.stderr
    assert "remove    sensorfw/old_module.mpy (no longer in the build)" in result.stdout
    assert "remove    shared_protocol/header.py (would shadow shared_protocol/header.mpy)" in result.stdout
    assert not (flash / "sensorfw" / "old_module.mpy").exists()
    assert not (flash / "shared_protocol" / "header.py").exists()
    assert user_file.read_text() == "mine\n"  # files the tool did not write are left alone
    assert victim.read_bytes() != original  # the manifest was trusted: same size, same record

    verified = flash_cli("deploy", *base, "--no-build", "--verify")
    assert verified.returncode == 0, verified.stderr
    assert "write     shared_protocol/topics.mpy" in verified.stdout
    assert f"deploy: 1 written, {len(manifest.files) - 1} unchanged, 0 removed" in verified.stdout
    assert victim.read_bytes() == original


def test_bad_config_touches_no_board(tmp_path: Path, board: VirtualBoard) -> None:
    devices = devices_file(tmp_path, 1883)
    devices.write_text(devices.read_text().replace("pin = 34 }", "pin = 99 }"))
    result = flash_cli("provision", "--device", "vb1", "--config", str(devices), "--port", board.port)
    assert result.returncode == 1
    assert "device vb1: config: rejected by the firmware" in result.stderr
    assert "sensors[0].pin" in result.stderr
    assert BROKER_SECRET not in result.stdout + result.stderr
    assert os.listdir(board.flash_dir) == []
    assert board.reboots == 0  # never connected


def test_unreachable_port_gives_an_actionable_error(tmp_path: Path) -> None:
    result = flash_cli("ls", "--port", str(tmp_path / "ttyNOPE"))
    assert result.returncode == 1
    assert "cannot open" in result.stderr
    assert "mpremote connect list" in result.stderr


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def make_mip_index(root: Path) -> str:
    """A micropython-lib style index with umqtt.simple (compiled from the cached source)."""
    compiled = root / "simple.mpy"
    subprocess.run(
        [find_mpy_cross(), "-o", str(compiled), str(UMQTT_CACHE / "umqtt" / "simple.py")], check=True, timeout=60
    )
    data = compiled.read_bytes()
    short = hashlib.sha256(data).hexdigest()[:8]
    (root / "file" / short[:2]).mkdir(parents=True)
    (root / "file" / short[:2] / short).write_bytes(data)
    package = root / "package" / "6" / "umqtt.simple"
    package.mkdir(parents=True)
    (package / "latest.json").write_text(json.dumps({"hashes": [["umqtt/simple.mpy", short]], "version": "1.3.4"}))
    return hashlib.sha256(data).hexdigest()


def test_umqtt_mip_opt_in_installs_with_real_mip_from_a_local_index(tmp_path: Path, board: VirtualBoard) -> None:
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    digest = make_mip_index(index_dir)
    build_dir = tmp_path / "build"
    # provisioned with the pinned umqtt first: --umqtt-mip then replaces it
    assert main(["deploy", "--port", board.port, "--arch", "native", "--build-dir", str(build_dir), "--no-reset"]) == 0
    assert (board.flash_dir / BOARD_MANIFEST).read_text().count("lib/umqtt/simple.mpy") == 1
    handler = functools.partial(_QuietHandler, directory=str(index_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = flash_cli(
            "provision",
            "--device",
            "vb1",
            "--config",
            str(devices_file(tmp_path, 1883)),
            "--port",
            board.port,
            "--build-dir",
            str(build_dir),
            "--no-build",
            "--umqtt-mip",
            "--mip-index",
            f"http://127.0.0.1:{server.server_address[1]}",
            "--no-reset",
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stdout + result.stderr
    # said as what it is, and the pinned file is neither shipped nor claimed
    index = f"http://127.0.0.1:{server.server_address[1]}"
    assert f"umqtt.simple: mip install from {index} (--umqtt-mip opt-in" in result.stdout
    assert f"NOT the pinned {UMQTT_PIN.version} the tests run" in result.stdout
    assert PINNED_LINE not in result.stdout
    assert "release   lib/umqtt/simple.mpy (left to be replaced, no longer claimed)" in result.stdout
    assert "lib/umqtt/simple.mpy" not in json.loads((board.flash_dir / BOARD_MANIFEST).read_text())["files"]
    installed = board.flash_dir / "lib" / "umqtt" / "simple.mpy"
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == digest
    check = mpremote(board.port, "exec", "from umqtt.simple import MQTTClient\nprint(MQTTClient.__name__)")
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "MQTTClient"


def test_mip_failure_says_what_to_do_offline(tmp_path: Path, board: VirtualBoard) -> None:
    build_dir = tmp_path / "build"
    assert main(["deploy", "--port", board.port, "--arch", "native", "--build-dir", str(build_dir), "--no-reset"]) == 0
    pinned = (board.flash_dir / "lib" / "umqtt" / "simple.mpy").read_bytes()
    result = flash_cli(
        "provision",
        "--device",
        "vb1",
        "--config",
        str(devices_file(tmp_path, 1883)),
        "--port",
        board.port,
        "--build-dir",
        str(build_dir),
        "--no-build",
        "--umqtt-mip",
        "--mip-index",
        f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "--no-reset",
    )
    assert result.returncode == 1
    assert "mip install umqtt.simple failed" in result.stderr
    assert "Without --umqtt-mip the pinned umqtt.simple (the one the tests run) is installed" in result.stderr
    # the board keeps a working umqtt (the pinned file, no longer claimed: the next deploy rewrites it)
    assert (board.flash_dir / "lib" / "umqtt" / "simple.mpy").read_bytes() == pinned
    assert "lib/umqtt/simple.mpy" not in json.loads((board.flash_dir / BOARD_MANIFEST).read_text())["files"]


def test_config_command_writes_only_config_and_skips_an_identical_one(
    tmp_path: Path, board: VirtualBoard, capfd: pytest.CaptureFixture[str]
) -> None:
    devices = devices_file(tmp_path, 1883)
    args = ["config", "--device", "vb1", "--config", str(devices), "--port", board.port, "--no-reset"]
    assert main(args) == 0
    assert sorted(os.listdir(board.flash_dir)) == ["config.json"]
    first = (board.flash_dir / "config.json").read_bytes()
    assert main(args) == 0
    out, err = capfd.readouterr()
    assert "config.json: written (" in out
    assert "config.json: unchanged" in out
    assert BROKER_SECRET not in out + err
    assert (board.flash_dir / "config.json").read_bytes() == first

    # a changed setting is written again, then listed by `ls`
    devices.write_text(devices.read_text().replace("health_s = 5", "health_s = 7"))
    assert main(args) == 0
    assert json.loads((board.flash_dir / "config.json").read_bytes())["health_s"] == 7
    assert main(["ls", "--port", board.port]) == 0
    out, _ = capfd.readouterr()
    size = (board.flash_dir / "config.json").stat().st_size
    assert f"{size:>8}  config.json" in out


def test_command_line_usage() -> None:
    usage = flash_cli()
    assert usage.returncode == 2
    for name in ("build", "provision", "deploy", "config", "ls", "status"):
        assert f"  {name}" in usage.stdout
    wrong = flash_cli("flash-it")
    assert wrong.returncode == 2
    assert "'flash-it' is not a command" in wrong.stderr


@pytest.mark.parametrize("use_base64", [True, False])
def test_board_writes_binary_files_exactly(board: VirtualBoard, use_base64: bool) -> None:
    data = bytes(range(256)) * 5 + b"\r\n\x04\x03'\"\\"  # every byte value, REPL control bytes, quotes
    target = Board.connect(board.port)
    try:
        target._base64 = use_base64  # base64 chunks, or mpremote's own fs_writefile
        target.write("blob.bin", data)
        assert target.read("blob.bin") == data
        assert target.sha256("blob.bin") == hashlib.sha256(data).hexdigest()
        assert target.listing() == {"blob.bin": len(data)}
    finally:
        target.close()
    assert (board.flash_dir / "blob.bin").read_bytes() == data
