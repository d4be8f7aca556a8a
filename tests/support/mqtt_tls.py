"""MQTT over TLS from CPython for tests: a client context from a device's credentials, and one
connection attempt that says how it ended (CONNACK, or the TLS alert the broker sent).

paho-mqtt hides why a TLS connection failed (its network loop retries, the reason is lost), so
the attempt here is CPython's ``ssl`` and one MQTT 3.1.1 CONNECT written out byte by byte.
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

from tools.flash.pki import DeviceCredentials


def write_pem(creds: DeviceCredentials, where: Path) -> tuple[Path, Path]:
    """The device's certificate and key as PEM files for CPython's ssl (the key 0600)."""
    where.mkdir(parents=True, exist_ok=True)
    cert = where / f"{creds.device_id}.crt"
    cert.write_bytes(creds.cert_pem)
    key = where / f"{creds.device_id}.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(creds.key_pem)
    return cert, key


def client_context(ca_file: Path, creds: DeviceCredentials | None = None, where: Path | None = None) -> ssl.SSLContext:
    """Verifies the broker against ``ca_file`` (name checked); presents ``creds`` if given."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if creds is not None:
        assert where is not None, "where: a directory for the PEM files"
        cert, key = write_pem(creds, where)
        context.load_cert_chain(str(cert), str(key))
    return context


def _connect_packet(client_id: str) -> bytes:
    ident = client_id.encode()
    variable = (
        b"\x00\x04MQTT"  # protocol name
        b"\x04"  # protocol level 4: MQTT 3.1.1
        b"\x02"  # connect flags: clean session, no user name, no password
        b"\x00\x3c"  # keep alive 60 s
    )
    payload = len(ident).to_bytes(2, "big") + ident
    remaining = len(variable) + len(payload)
    assert remaining < 128  # one length byte
    return bytes([0x10, remaining]) + variable + payload  # 0x10: CONNECT


def try_connect(
    host: str,
    port: int,
    context: ssl.SSLContext,
    *,
    server_hostname: str,
    client_id: str = "probe",
    connect: bool = True,
) -> str:
    """ "accepted", "connack <code>", or "tls: <reason>" / "closed" when the broker refused the
    TLS session (the reason names the alert, e.g. SSLV3_ALERT_CERTIFICATE_REVOKED).

    TLS 1.2 (what mbedTLS boards speak): the server checks the client's certificate inside the
    handshake, so a refusal is the handshake's own alert. (With TLS 1.3 it comes after the
    client's handshake is done, and is lost when the broker's close races the client's CONNECT.)"""
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((host, port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
                if not connect:  # the handshake only: no MQTT session is opened (or taken over)
                    return "accepted"
                tls.sendall(_connect_packet(client_id))
                reply = b""
                while len(reply) < 4:
                    chunk = tls.recv(4 - len(reply))
                    if not chunk:
                        return "closed"
                    reply += chunk
        except ssl.SSLError as exc:
            return f"tls: {exc.reason or type(exc).__name__}"
        except (ConnectionResetError, BrokenPipeError):
            return "closed"
    assert reply[:2] == b"\x20\x02", reply  # CONNACK, remaining length 2
    return "accepted" if reply[3] == 0 else f"connack {reply[3]}"
