"""The shipped Mosquitto drop-in (deploy/mosquitto/edgeline.conf, .acl) on a stock Debian /
Raspberry Pi OS layout: the distribution's /etc/mosquitto/mosquitto.conf (``include_dir
/etc/mosquitto/conf.d``, its own persistence_location, pid and log files) copied to a scratch
directory with only its /etc, /var and /run paths moved there, the shipped files as they are
installed (paths rewritten the same way, nothing else). Mosquitto runs in a network namespace of
its own whose loopback carries the device network's address, 192.168.4.1, so both listeners bind
exactly as on a Pi. The broker's TLS files (``[broker.tls]`` of gateway.example.toml) and a
device's certificate come from a fleet CA made for the test (tools/flash/pki.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.mosquitto import MOSQUITTO_PASSWD
from tests.support.mqtt_tls import write_pem
from tests.support.upy import ROOT
from tools.flash.pki import FleetCA

DEPLOY = ROOT / "deploy" / "mosquitto"
DEBIAN_CONF = Path("/etc/mosquitto/mosquitto.conf")  # as the mosquitto package installs it
USERS = {"gateway": "gateway-secret-1"}


def _moved(text: str, root: Path) -> str:
    """Every absolute /etc, /var or /run path of a configuration, under root."""
    return re.sub(r"(?<![\w/])/(etc|var|run)/", lambda m: f"{root}/{m.group(1)}/", text)


def test_shipped_drop_in_loads_on_debian_mosquitto_conf_and_serves_both_listeners(tmp_path: Path) -> None:
    assert DEBIAN_CONF.exists(), "Debian's mosquitto.conf missing: apt-get install mosquitto"
    stock = DEBIAN_CONF.read_text()
    assert "include_dir /etc/mosquitto/conf.d" in stock and "persistence_location" in stock, stock
    root = tmp_path / "root"
    etc = root / "etc" / "mosquitto"
    (etc / "conf.d").mkdir(parents=True)
    for d in ("var/lib/mosquitto", "var/log/mosquitto", "run/mosquitto"):
        (root / d).mkdir(parents=True)
    main_conf = _moved(stock, root)
    if os.geteuid() == 0:
        # As root Mosquitto switches to the "mosquitto" user, which cannot enter the test's
        # private directories; on a Pi the files are where that user reads them.
        main_conf += "user root\n"
    (etc / "mosquitto.conf").write_text(main_conf)
    (etc / "conf.d" / "edgeline.conf").write_text(_moved((DEPLOY / "edgeline.conf").read_text(), root))
    shutil.copy(DEPLOY / "edgeline.acl", etc / "edgeline.acl")
    passwd = etc / "edgeline.passwd"
    for user, password in USERS.items():
        subprocess.run(
            [MOSQUITTO_PASSWD, *(["-c"] if not passwd.exists() else []), "-b", str(passwd), user, password], check=True
        )
    (root / "etc" / "users.txt").write_text("\n".join(f"{u}:{p}" for u, p in USERS.items()))
    # ca server-cert --name gateway.plant1 --ip 192.168.4.1, installed where [broker.tls] says
    ca = FleetCA.init(tmp_path / "ca", "plant1")
    ca.issue_server("gateway.plant1", etc / "edgeline", ips=["192.168.4.1"])
    ca.write_crl(etc / "edgeline" / "crl.pem")
    write_pem(ca.issue_device("pump-1"), root / "etc" / "pump-1")
    # A network namespace with the device network's address; as a non-root user, inside a user
    # namespace too.
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    setup = 'ip link set lo up && ip addr add 192.168.4.1/32 dev lo && exec "$@"'
    r = subprocess.run(
        [*unshare, "sh", "-c", setup, "sh", sys.executable, "-m", "tests.deploy.dropin_broker", str(root / "etc")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    log = root / "var" / "log" / "mosquitto" / "mosquitto.log"
    detail = f"{r.stdout}\n{r.stderr}\nmosquitto.log:\n{log.read_text() if log.exists() else '(none)'}"
    assert "Operation not permitted" not in r.stderr, f"cannot make a network namespace here (unshare): {detail}"
    assert r.returncode == 0, detail
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result == {
        "listening": True,
        "delivered": ["el/plant1/pump-1/data", "frame"],
        "without_certificate": "tls: SSLV3_ALERT_HANDSHAKE_FAILURE",
    }, detail
    text = log.read_text()
    assert "Opening ipv4 listen socket on port 1883" in text and "Opening ipv4 listen socket on port 8883" in text
    errors = [line for line in text.splitlines() if "Error" in line]
    assert errors == [line for line in errors if "peer did not return a certificate" in line], text
