"""``edgeline-gateway`` command line (also ``python -m gateway``).

Commands (a table of name -> (handler, argument setup)):

  run           run the gateway with a TOML configuration
  check-config  validate a configuration (and load its models) without running
  status        print the running gateway's status file and device registry
  add-device    add or update a device credential in a Mosquitto password file
  broker-config write the local Mosquitto's configuration and ACL for this gateway
  raw           print a device's raw readings for a time span from the raw log
  replay        play a CSV recording or a raw-log span through the pipeline; per-window scores out
  device-config change a device's settings or thresholds through the running gateway
  tpm-key       make the gateway's cloud client key inside the TPM; write its key file and CSR
  keys          status, rotate or retire the data keys of encryption at rest (gateway/keycmd.py)
  model         status of the pipelines' models and their updates, or roll one back (gateway/modelcmd.py)
  ota           status, pause, resume or abort firmware rollouts (gateway/otacmd.py)
  update        install a signed bundle file, or show the updates (gateway/updatecmd.py)
  calibration   status of the devices' calibrations, or start one again (gateway/calibcmd.py)

Long (about 740 lines) because it holds every command's handler and argument set-up, each short;
commands with more to do than parse and print live in the modules named above.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import config as config_mod
from gateway.config import Config
from gateway.errors import GatewayError
from shared_protocol.gw_topics import gateway_topic

DEFAULT_CONFIG = "/etc/edgeline/gateway.toml"

log = logging.getLogger(__name__)


class CommandError(GatewayError):
    """A user-facing failure: the message says what failed and what to do."""


def _load(args: argparse.Namespace) -> Config:
    return config_mod.load(args.config)


# --------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.runner import Runner
    from gateway.updates.gwconfig import start_config

    # Everything the gateway creates (registry, raw log, status, forward queue) is private,
    # under systemd (its unit sets UMask=0077 too) or not.
    os.umask(0o077)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    path = Path(args.config)
    cfg = start_config(path)  # a configuration on trial (signed config update): counted, or rolled back
    private_data_dir(Path(cfg.gateway.data_dir))
    runner = Runner(cfg, config_path=path)
    runner.install_signal_handlers()
    runner.run()
    if runner.restart_requested:  # into a new configuration, or back to the old one: the same command line
        log.info("restarting: %s", " ".join(sys.orig_argv))
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return 0


def private_data_dir(path: Path) -> None:
    """Create ``gateway.data_dir`` with mode 700, or take group and other access away from an
    existing one and everything in it (files an earlier run left with the default umask)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for top, dirs, files in os.walk(path.resolve()):  # follows no symlink below data_dir
            for p in (Path(top), *(Path(top) / n for n in dirs + files)):
                st = p.lstat()
                mode = stat.S_IMODE(st.st_mode)
                if mode & 0o077 and not stat.S_ISLNK(st.st_mode):
                    os.chmod(p, mode & 0o700)
                    log.warning("gateway.data_dir: %s had mode %04o; now %04o", p, mode, mode & 0o700)
    except OSError as exc:
        raise CommandError(
            f"gateway.data_dir: cannot make {exc.filename or path} private ({exc.strerror}); "
            f"as its owner run `chmod -R go= {path}`"
        ) from exc


# --------------------------------------------------------------------------- check-config


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.runner import load_models
    from gateway.scoring import ModelSpec

    cfg = _load(args)
    g = cfg.gateway
    print(f"gateway {g.id}: site {g.site}, data in {g.data_dir}, topics {g.prefix}/{g.site}/<device>/<kind>")
    print(f"mqtt {cfg.mqtt.host}:{cfg.mqtt.port} user {cfg.mqtt.username or '(anonymous)'}")
    cfg.mqtt.read_password()  # the same check as `run`: exists, mode 600, not empty
    cfg.web.read_password()  # the status page's, when configured: the same check
    from gateway.brokertls import device_auth

    auth = device_auth(cfg.broker)
    print(auth.summary)
    for warning in auth.warnings:
        print(f"warning: {warning}")
    models = load_models(cfg) if not args.skip_models else {}
    for n, p in enumerate(cfg.pipelines):
        if p.name in models:
            spec = ModelSpec.of(models[p.name], threshold=p.threshold)
            print(
                f"pipeline {p.name}: model {spec.version} window {spec.window_len} hop {spec.hop} "
                f"channels {','.join(p.channels or spec.channels)} threshold {spec.threshold:g} "
                f"devices {','.join(p.devices)}"
            )
            if p.calibrate is not None:  # the same check as `run`: a model that can be calibrated
                from gateway.calibration import check_model

                check_model(p, models[p.name], f"pipelines[{n}].calibrate")
                c = p.calibrate
                print(
                    f"  calibrate per device: {c.windows} windows{' to normalise, then' if c.normalise else ''} "
                    f"{c.windows} for a threshold at false-alarm rate {c.false_alarm_rate:g}"
                )
        else:
            print(f"pipeline {p.name}: model {p.model} (not loaded)")
    for r in cfg.rules:
        print(
            f"rule {r.name}: alert from {r.on_alert_from} -> {r.device} output {r.output} = {r.value} "
            f"for {r.duration_s:g} s"
        )
    if cfg.forward is not None:  # validated with the rest of the file (gateway.config.load)
        from gateway.forward.config import check_private_files

        f = cfg.forward
        check_private_files(f)  # the same check as `run`: password file and TLS key private
        print(
            f"forward: {f.host}:{f.port} tls {'on' if f.tls is not None else 'off'}, "
            f"payload {f.payload_format}, disk budget {f.disk_budget_mb:g} MB"
        )
    else:
        print(f"forward: none (summaries published on {gateway_topic(g.prefix, g.site, 'summary')})")
    _check_encryption(cfg)
    if cfg.updates is not None:  # the same check as `run`: every trusted key readable and Ed25519
        from gateway.updates.bundle import load_trusted_keys

        keys = load_trusted_keys(cfg.updates.trusted_keys)
        print(f"updates: on, trusted release keys {', '.join(keys.ids)}, state in {cfg.updates.state_dir}")
    print("configuration OK")
    return 0


def _check_encryption(cfg: Config) -> None:
    """[encryption]: the key ring opens (its keys unseal), or the first run will make it."""
    from gateway.atrest import RING_FILE, key_name, open_keyring

    e = cfg.encryption
    if e is None:
        print("encryption at rest: off")
    elif not (e.key_dir / RING_FILE).exists():
        print(f"encryption at rest: on, sealer {e.sealer}; the first run makes the key ring in {e.key_dir}")
    else:
        ring = open_keyring(e)
        print(
            f"encryption at rest: on, sealer {e.sealer}, {len(ring.infos())} key(s) in {e.key_dir}, active {key_name(ring.active_id)}"
        )
        ring.close()


# --------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 while the gateway runs; 1 (and why, on stderr) when it does not (its last status is shown)."""
    from gateway.registry import read_devices
    from gateway.runner import STATUS_FILE
    from gateway.status import not_running, ota_lines

    cfg = _load(args)
    data_dir = Path(cfg.gateway.data_dir)
    path = data_dir / STATUS_FILE
    if not path.exists():
        raise CommandError(f"no status file at {path}: is `edgeline-gateway run` running with this config?")
    status: dict[str, Any] = json.loads(path.read_text())
    devices = read_devices(data_dir / "registry.sqlite")
    down = not_running(status, time.time())
    rc = 0 if down is None else 1
    if down is not None:
        print(f"edgeline-gateway status: the gateway is NOT running: {down}", file=sys.stderr)
    if args.json:
        print(json.dumps({"running": down is None, "status": status, "devices": devices}, indent=1))
        return rc
    age = time.time() - float(status.get("written_at", 0))
    fr = status["frames"]
    q = status["ingest"]["queue"]
    state = "running" if down is None else "NOT RUNNING"
    print(f"gateway {status['gateway']} site {status['site']} pid {status['pid']} {state} (status {age:.0f} s old)")
    print(
        f"mqtt connected={status['ingest']['connected']} queue depth {q['depth']}/{q['capacity']} "
        f"high-water {q['high_water']} dropped {q['dropped']} blocked {q['blocked_s']:.3f} s"
    )
    print(
        f"frames {fr['received']} data {fr['data_accepted']} readings {fr['readings']} "
        f"bad {status['bad_frames']['total']} alerts {status['alerts']} commands {status['commands']}"
    )
    rl = status["rawlog"]
    print(f"raw log {rl['frames']} frames, {rl['stored_bytes']} B stored, {rl['file_bytes']} B on disk")
    enc = status.get("encryption")
    if enc:  # [encryption]: what failed authentication is counted (docs/gateway.md, Encryption at rest)
        unreadable = ((status.get("forward") or {}).get("encryption") or {}).get("unreadable", 0)
        print(
            f"encryption at rest: key {enc['active_key']}; unreadable: {rl.get('unreadable', 0)} raw log chunk(s),"
            f" {unreadable} forward record(s)"
        )
    for name, p in status["pipelines"].items():
        print(f"pipeline {name}: model {p['model_version']} windows scored {p['windows_scored']}")
    if status.get("model_updates"):  # the pipelines' models from signed updates, candidates in shadow
        from gateway.modelcmd import status_lines as model_lines

        for line in model_lines(status["model_updates"]):
            print(f"models: {line.strip()}")
    trial = (status.get("config_update") or {}).get("trial")
    if trial:  # a signed gateway.toml proving itself after the restart into it
        left = status["config_update"]["health_left_s"]
        print(
            f"configuration {trial['version']} on trial (start {trial['starts']}): healthy within {left:g} s or rolled back"
        )
    for line in ota_lines(status.get("ota") or {}):  # firmware rollouts ([updates])
        print(line)
    if status.get("updates"):  # signed bundles: received, refused and why ([updates])
        from gateway.updatecmd import status_lines

        for line in status_lines(status["updates"]):
            print(f"updates: {line}")
    print(f"{'device':<20} {'online':<7} {'state':<8} {'boot':>5} {'fw':<12} last seen")
    for d in devices:
        print(
            f"{d['device']:<20} {d['online']!s:<7} {d['state']:<8} {d['boot'] or '-':>5} "
            f"{d['fw_version'] or '-':<12} {d['last_seen_s']:.0f} s ago"
        )
    return rc


# --------------------------------------------------------------------------- add-device


def cmd_add_device(args: argparse.Namespace) -> int:
    """Add a device (or the gateway user) to a Mosquitto password file via mosquitto_passwd."""
    from shared_protocol.topics import valid_id

    if not valid_id(args.device):
        raise CommandError(f"device id {args.device!r}: use 1-32 characters from A-Z a-z 0-9 _ -")
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(tool).exists():
        raise CommandError("mosquitto_passwd not found: install the mosquitto package (apt install mosquitto)")
    pw_file = _broker_password_file(args)
    generated = False
    if args.generate:
        password = secrets.token_urlsafe(18)
        generated = True
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.device}: ")
        if password != getpass.getpass("again: "):
            raise CommandError("passwords differ; nothing changed")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise CommandError("password shorter than 8 characters; nothing changed")
    if not pw_file.exists():
        pw_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    os.chmod(pw_file, 0o600)
    # The password goes through a pipe, never on the command line (visible in ps).
    proc = subprocess.run(
        [tool, str(pw_file), args.device],
        input=f"{password}\n{password}\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        err = proc.stderr.strip().replace(password, "***")
        raise CommandError(f"mosquitto_passwd failed for {args.device}: {err}")
    os.chmod(pw_file, 0o600)
    if args.secret_out:
        out = Path(args.secret_out)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        os.chmod(out, 0o600)
        print(f"{args.device}: credential added to {pw_file}; password written to {out} (mode 600)")
    elif generated:
        # Shown once, to the operator who asked for it; never logged.
        print(f"{args.device}: credential added to {pw_file}; generated password: {password}")
    else:
        print(f"{args.device}: credential added to {pw_file}")
    print("reload Mosquitto to apply: systemctl reload mosquitto (or send it SIGHUP)")
    return 0


def _broker_password_file(args: argparse.Namespace) -> Path:
    """--password-file, else broker.password_file of the configuration (-c, or the default
    configuration when it exists), else that key's default."""
    if args.password_file:
        return Path(args.password_file)
    path = args.config or os.environ.get("EDGELINE_GATEWAY_CONFIG", DEFAULT_CONFIG)
    if args.config is None and not Path(path).exists():
        return config_mod.BrokerSection().password_file
    return config_mod.load(path).broker.password_file


# --------------------------------------------------------------------------- broker-config


def cmd_broker_config(args: argparse.Namespace) -> int:
    """Write edgeline.conf and edgeline.acl for this gateway's site into --out-dir."""
    from gateway import brokerconf

    cfg = _load(args)
    files = brokerconf.generate(cfg)
    out_dir = Path(args.out_dir)
    try:
        conf, acl = brokerconf.write(files, out_dir)
    except OSError as exc:
        raise CommandError(f"--out-dir: cannot write into {out_dir} ({exc.strerror})") from exc
    b, g = cfg.broker, cfg.gateway
    devices_on = b.device_address or f"interface {b.device_interface}"
    print(f"wrote {conf} and {acl} (mode 600) for site {g.site}, topics {g.prefix}/{g.site}/<device>/<kind>")
    print(
        f"listeners: gateway and local tools {cfg.mqtt.host}:{cfg.mqtt.port}, devices {devices_on} port {b.device_port}"
    )
    print("install them (then restart Mosquitto: listeners change only on a restart):")
    print(f"  sudo install -m 644 {conf} {brokerconf.CONF_INSTALL_PATH}")
    if acl.resolve() != b.acl_file.resolve():
        print(f"  sudo install -o mosquitto -g mosquitto -m 600 {acl} {b.acl_file}")
    print("  sudo systemctl restart mosquitto")
    return 0


# --------------------------------------------------------------------------- tpm-key


def cmd_tpm_key(args: argparse.Namespace) -> int:
    """Have the TPM generate the gateway's cloud client key; write the TSS2 key file and a CSR."""
    from gateway.csr import CSRError
    from gateway.tpm import TpmError, new_client_key

    key_out, csr_out = Path(args.key_out), Path(args.csr_out)
    for flag, path in (("--key-out", key_out), ("--csr-out", csr_out)):
        if path.exists():
            raise CommandError(f"{flag}: {path} exists; a new key needs a new certificate: move it away first")
    try:
        key, csr_pem = new_client_key(args.tcti, args.cn)
    except (TpmError, CSRError) as exc:
        raise CommandError(f"--tcti {args.tcti}: {exc}") from exc
    try:
        fd = os.open(key_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.to_pem())
        fd = os.open(csr_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(csr_pem)
    except OSError as exc:
        raise CommandError(f"cannot write {exc.filename} ({exc.strerror})") from exc
    print(f"key made inside the TPM ({args.tcti}), EC P-256: {key_out} (mode 600) is usable only with this TPM")
    print(f"certificate request for CN={args.cn}: {csr_out}; have the cloud operator sign it, then set")
    print(f'  [forward.tls] cert_file = "<the certificate>", key_file = "{key_out}", tpm_tcti = "{args.tcti}"')
    return 0


# --------------------------------------------------------------------------- raw


def cmd_raw(args: argparse.Namespace) -> int:
    from gateway.export import export_readings

    cfg = _load(args)
    t_to = args.to if args.to is not None else time.time()
    t_from = args.since if args.since is not None else t_to - args.last
    try:
        n = export_readings(Path(cfg.gateway.data_dir), args.device, t_from, t_to, sys.stdout)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    print(f"# {n} readings", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- replay


def cmd_replay(args: argparse.Namespace) -> int:
    from gateway.replay import replay

    cfg = _load(args)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(levelname)s %(name)s: %(message)s")
    if args.rawlog is not None:
        if args.files:
            raise CommandError(f"replay: give CSV files or --rawlog {args.rawlog}, not both")
        if args.since is None:
            raise CommandError("replay --rawlog: --since is required (Unix time, s)")
        from gateway.rawrec import read_rawlog

        keys = None
        if cfg.encryption is not None:
            from gateway.atrest import open_keyring

            keys = open_keyring(cfg.encryption)
        t_to = args.to if args.to is not None else time.time()
        rec = read_rawlog(Path(cfg.gateway.data_dir), args.rawlog, args.since, t_to, keys=keys)
        device = args.device or args.rawlog
    else:
        if not args.files:
            raise CommandError("replay: give one or more CSV files, or --rawlog DEVICE --since T")
        from gateway.csvrec import csv_options, read_csv

        rec = read_csv([Path(f) for f in args.files], **csv_options(args))
        device = args.device or "replay"
    out = Path(args.out)
    tmp = out.with_name(out.name + ".part")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        res = replay(cfg, rec, device=device, out=f, pipeline=args.pipeline, progress=sys.stderr)
    tmp.replace(out)
    print(res.summary())
    print(f"scores of pipeline {res.pipeline}: {out} ({res.windows} windows)")
    return 0


# --------------------------------------------------------------------------- device-config

DEVICE_CONFIG_EXIT = {"refused": 1, "not_running": 2, "timeout": 3}


def _number(option: str, text: str) -> int | float:
    """--set / --threshold values: an integer, else a number."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise CommandError(f"{option}: {text!r} is not a number") from None


def _pairs(option: str, items: list[str], *, reset_words: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise CommandError(f"{option} {item!r}: write NAME=VALUE")
        out[name] = None if value.lower() in reset_words else _number(f"{option} {name}", value)
    return out


def cmd_device_config(args: argparse.Namespace) -> int:
    """Change (or --show) a device's configuration through the running gateway's control socket."""
    from gateway.control_socket import ControlSocketError, request, socket_path
    from gateway.devconfig import PICKUP_S

    cfg = _load(args)
    if args.timeout <= 0:
        raise CommandError("--timeout must be above 0 seconds")
    body: dict[str, Any] = {"device": args.device, "timeout_s": args.timeout}
    if args.show:
        if args.set or args.threshold:
            raise CommandError("--show takes no --set or --threshold")
        body["op"] = "show"
    else:
        body["op"] = "set"
        body["set"] = _pairs("--set", args.set)
        body["thresholds"] = _pairs("--threshold", args.threshold, reset_words=("default", "none"))
        if not body["set"] and not body["thresholds"]:
            raise CommandError("nothing to change: give --set KEY=VALUE, --threshold PIPELINE=VALUE or --show")
    try:
        res = request(socket_path(Path(cfg.gateway.data_dir)), body, timeout=args.timeout + 2 * PICKUP_S)
    except ControlSocketError as exc:
        print(f"edgeline-gateway device-config: {exc}", file=sys.stderr)
        return DEVICE_CONFIG_EXIT["not_running"]
    if args.json:
        print(json.dumps(res, indent=1))
    if args.show and res.get("ok"):
        if not args.json:
            _print_show(res)
        return 0
    if res.get("ok"):
        if not args.json:
            config = " ".join(f"{k}={v:g}" for k, v in (res.get("config") or {}).items())
            how = " (the device restarts to apply it)" if res.get("result") == "rebooting" else ""
            print(f"{args.device}: applied{how}" + (f": {config}" if config else ""))
            for name, t in (res.get("thresholds") or {}).items():
                print(
                    f"{args.device}: pipeline {name} threshold {t['in_force']}"
                    + ("" if t["override"] is not None else " (the pipeline's)")
                )
        return 0
    who = "the gateway" if res.get("by") == "gateway" else args.device
    if not args.json:
        print(f"edgeline-gateway device-config: {who}: {res.get('message')}", file=sys.stderr)
    return DEVICE_CONFIG_EXIT["timeout" if res.get("reason") == "timeout" else "refused"]


def _print_show(res: dict[str, Any]) -> None:
    rates = ", ".join(f"{r:g}" for r in res["rates_hz"]) or "-"
    print(f"{res['device']}: online {res['online']} boot {res['boot']} sampling at {rates} Hz (its BIRTH)")
    rep = res.get("reported")
    if rep:
        age = time.time() - float(rep["at"])
        values = " ".join(f"{k}={v:g}" for k, v in rep["config"].items())
        print(f"last acknowledged ({age:.0f} s ago, change {rep['change_id']}, {rep['result']}): {values}")
    else:
        print("no configuration change acknowledged yet")
    for name, t in res["thresholds"].items():
        src = (
            "override" if t["override"] is not None else "calibrated" if t.get("calibrated") is not None else "pipeline"
        )
        print(f"pipeline {name}: threshold {t['in_force']} ({src})")
    print(f"settable: {', '.join(res['settable'])}")


# --------------------------------------------------------------------------- table


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=os.environ.get("EDGELINE_GATEWAY_CONFIG", DEFAULT_CONFIG))


def _setup_run(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _setup_check(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument("--skip-models", action="store_true", help="do not load the models")


def _setup_status(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument("--json", action="store_true")


def _setup_add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("device", help="device id (its MQTT username)")
    p.add_argument(
        "-c",
        "--config",
        help=f"take the password file from broker.password_file of this file (default {DEFAULT_CONFIG} if it exists)",
    )
    p.add_argument("--password-file", help="Mosquitto password file (default: broker.password_file)")
    p.add_argument("--generate", action="store_true", help="generate a random password")
    p.add_argument("--secret-out", help="also write the password to this file (mode 600), e.g. for provisioning")


def _setup_broker_config(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument("--out-dir", required=True, help="directory for edgeline.conf and edgeline.acl")


def _setup_raw(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument("device")
    p.add_argument("--since", type=float, help="start, Unix time (s)")
    p.add_argument("--to", type=float, help="end, Unix time (s); default now")
    p.add_argument("--last", type=float, default=60.0, help="span in seconds when --since is not given")


def _setup_replay(p: argparse.ArgumentParser) -> None:
    from gateway.csvrec import add_csv_arguments

    _config_arg(p)
    p.add_argument("files", nargs="*", metavar="FILE", help="CSV files of one recording (or use --rawlog)")
    p.add_argument("--rawlog", metavar="DEVICE", help="replay this device's readings from the gateway's raw log")
    p.add_argument("--since", type=float, help="with --rawlog: start, Unix time (s)")
    p.add_argument("--to", type=float, help="with --rawlog: end, Unix time (s); default now")
    p.add_argument(
        "--device",
        help="the device name the recording is played as (default: the --rawlog device, else 'replay'); "
        "it must match the pipeline's devices",
    )
    p.add_argument("--pipeline", help="the pipeline whose windows are written (default: the one scoring the device)")
    p.add_argument("--out", required=True, help="the per-window scores CSV to write")
    p.add_argument("--log-level", default="error", choices=["debug", "info", "warning", "error"])
    add_csv_arguments(p)


def _setup_tpm_key(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tcti", default="device:/dev/tpmrm0", help="the TPM (default device:/dev/tpmrm0)")
    p.add_argument("--key-out", required=True, help="the TSS2 key file to write (mode 600)")
    p.add_argument("--csr-out", required=True, help="the certificate request to write (PEM)")
    p.add_argument("--cn", required=True, help="the certificate's common name: the gateway id")


def _setup_device_config(p: argparse.ArgumentParser) -> None:
    _config_arg(p)
    p.add_argument("device")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="sample_rate_hz, batch, health_interval_s"
    )
    p.add_argument(
        "--threshold", action="append", default=[], metavar="PIPELINE=VALUE", help="VALUE 'default' drops the override"
    )
    p.add_argument("--show", action="store_true", help="print what the device last acknowledged and its thresholds")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the device (default 10)")
    p.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")


def cmd_keys(args: argparse.Namespace) -> int:
    from gateway.keycmd import cmd_keys as keys

    return keys(args)


def _setup_keys(p: argparse.ArgumentParser) -> None:
    from gateway.keycmd import setup

    setup(p, _config_arg)


def cmd_ota(args: argparse.Namespace) -> int:
    from gateway.otacmd import cmd_ota as ota

    return ota(args)


def cmd_model(args: argparse.Namespace) -> int:
    from gateway.modelcmd import cmd_model as model

    return model(args)


def _setup_model(p: argparse.ArgumentParser) -> None:
    from gateway.modelcmd import setup

    setup(p, _config_arg)


def cmd_calibration(args: argparse.Namespace) -> int:
    from gateway.calibcmd import cmd_calibration as calibration

    return calibration(args)


def _setup_calibration(p: argparse.ArgumentParser) -> None:
    from gateway.calibcmd import setup

    setup(p, _config_arg)


def _setup_ota(p: argparse.ArgumentParser) -> None:
    from gateway.otacmd import setup

    setup(p, _config_arg)


def cmd_update(args: argparse.Namespace) -> int:
    from gateway.updatecmd import cmd_update as update

    return update(args)


def _setup_update(p: argparse.ArgumentParser) -> None:
    from gateway.updatecmd import setup

    setup(p, _config_arg)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None], str]] = {
    "run": (cmd_run, _setup_run, "run the gateway"),
    "check-config": (cmd_check_config, _setup_check, "validate a configuration file"),
    "status": (cmd_status, _setup_status, "show the running gateway's status and devices"),
    "add-device": (cmd_add_device, _setup_add_device, "add a device credential to the Mosquitto password file"),
    "broker-config": (cmd_broker_config, _setup_broker_config, "write the Mosquitto configuration and ACL"),
    "raw": (cmd_raw, _setup_raw, "print raw readings of a device from the raw log (CSV)"),
    "replay": (cmd_replay, _setup_replay, "replay a recording through the pipeline; write per-window scores"),
    "device-config": (cmd_device_config, _setup_device_config, "change a device's configuration (running gateway)"),
    "tpm-key": (cmd_tpm_key, _setup_tpm_key, "make the cloud client key in the TPM, and its certificate request"),
    "keys": (cmd_keys, _setup_keys, "status, rotate or retire the keys of encryption at rest"),
    "model": (cmd_model, _setup_model, "each pipeline's model and its update; roll a model back (running gateway)"),
    "calibration": (
        cmd_calibration,
        _setup_calibration,
        "per-device calibration: each device's phase and threshold; calibrate one again (running gateway)",
    ),
    "ota": (cmd_ota, _setup_ota, "status, pause, resume or abort firmware rollouts (running gateway)"),
    "update": (cmd_update, _setup_update, "install a signed bundle file, or show updates (running gateway)"),
}


def main(argv: list[str] | None = None) -> int:
    # One BLAS thread: the gateway's matrices are small, and BLAS worker threads on a
    # Pi's few cores cost more in wake-ups than they save (must precede numpy's import).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    parser = argparse.ArgumentParser(prog="edgeline-gateway", description="edgeline Raspberry Pi gateway")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_handler, setup, help_text) in COMMANDS.items():
        setup(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    handler = COMMANDS[args.command][0]
    try:
        rc = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return rc
    except GatewayError as exc:  # ConfigError (ForwardConfigError too), CommandError, ModelError ...
        print(f"edgeline-gateway {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`edgeline-gateway raw ... | head`): no traceback. Python's
        # documented way: point stdout at devnull so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE  # 141, as a command killed by SIGPIPE


def _version() -> str:
    """The installed distribution's version (pyproject.toml's, once installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgeline")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"
