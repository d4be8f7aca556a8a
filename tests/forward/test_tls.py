"""TLS toward the cloud broker: a real Mosquitto TLS listener with certificates made by this test
(openssl CLI), server verification against our CA, and mutual TLS with a client certificate."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from gateway.forward import ForwardConfig, Forwarder
from tests.forward.helpers import Collector, records
from tests.support.mosquitto import Mosquitto, free_port


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        str(key),
        "-out",
        str(crt),
    )
    return key, crt


def _make_cert(d: Path, name: str, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    key, csr, crt, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt", d / f"{name}.ext"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
    ext.write_text(f"subjectAltName={san}\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[1]),
        "-CAkey",
        str(ca[0]),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(crt),
    )
    return key, crt


def test_tls_server_verification_and_client_certificate(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = _make_ca(pki, "edgeline-test-ca")
    server = _make_cert(pki, "broker", ca, "IP:127.0.0.1,DNS:localhost")
    client = _make_cert(pki, "gateway", ca, "DNS:gw-tls")
    rogue_ca = _make_ca(pki, "rogue-ca")
    tls_port = free_port()
    cloud = mosquitto_factory(
        extra_conf="\n".join(
            [
                f"listener {tls_port} 127.0.0.1",
                f"cafile {ca[1]}",
                f"certfile {server[1]}",
                f"keyfile {server[0]}",
                "require_certificate true",  # mutual TLS: the gateway must show a certificate of our CA
            ]
        )
    )
    collector = Collector(cloud)  # on the plain listener, as the cloud's consumer

    def forwarder(name: str, ca_file: Path) -> Forwarder:
        cfg = ForwardConfig.from_dict(
            {
                "host": "127.0.0.1",
                "port": tls_port,
                "tls": {"ca_file": str(ca_file), "cert_file": str(client[1]), "key_file": str(client[0])},
                "backoff_min_s": 0.05,
                "backoff_max_s": 0.2,
            }
        )
        return Forwarder(cfg, name, tmp_path / name)

    good = forwarder("gw-tls", ca[1])
    bad = forwarder("gw-rogue", rogue_ca[1])  # trusts another CA: must refuse our broker
    good.start()
    bad.start()
    try:
        good.submit("alert", {"over": "tls"})
        bad.submit("alert", {"over": "nothing"})
        assert good.wait_drained(30), good.status()
        got = collector.wait_for(lambda m: len(records(m)) >= 1)
        deadline = time.monotonic() + 20
        while "certificate verify failed" not in str(bad.status()["connection"]["last_error"]):
            assert time.monotonic() < deadline, bad.status()["connection"]
            time.sleep(0.02)
        status = bad.status()
    finally:
        good.stop()
        bad.stop()
        collector.close()
    assert list({r["key"]: r["record"] for r in records(got)}.values()) == [{"over": "tls"}]
    assert status["connection"]["state"] != "connected"
    assert status["connection"]["tls"] is True
    assert status["lanes"]["alert"]["depth"] == 1  # kept, waiting for a broker it can trust
    assert status["lanes"]["alert"]["acked"] == 0
