"""``edgeline-flash ca``: the site's fleet CA (tools/flash/pki.py) from the command line.

    edgeline-flash ca init --dir ca --site plant1
    edgeline-flash ca server-cert --dir ca --name gateway.plant1 --ip 192.168.4.1 --out gateway-tls
    edgeline-flash ca issue pump-01 --config devices.toml      # or renew: a new key and certificate
    edgeline-flash ca revoke pump-01 --config devices.toml     # and writes the CRL
    edgeline-flash ca crl --config devices.toml [--out FILE]
    edgeline-flash ca list --config devices.toml

The CA directory is --dir (also spelt --ca-dir), else ``[ca] dir`` of --config devices.toml.
Keys are never printed: commands say where the files are and when the certificates expire.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tools.flash.device_certs import obtain, renew_due
from tools.flash.devices import CASettings, ca_settings, load_devices_file
from tools.flash.errors import FlashError
from tools.flash.pki import CA_DAYS, CRL_DAYS, DEVICE_DAYS, SERVER_DAYS, FleetCA, IssuedCert

if TYPE_CHECKING:
    from tools.flash.commands import State

#: the CRL's default file in the CA directory (copy it to the gateway's broker.tls.crl_file)
CRL_NAME = "crl.pem"


def _ca_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", "--ca-dir", dest="ca_dir", metavar="DIR", help="the CA directory")
    parser.add_argument(
        "--config", metavar="DEVICES_TOML", help="take the CA directory from [ca] dir of this devices.toml"
    )


def parser_ca() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgeline-flash ca",
        description="the site's fleet CA: device and server certificates, revocation, the CRL",
    )
    sub = p.add_subparsers(dest="ca_command", required=True, metavar="COMMAND")
    init = sub.add_parser("init", help="create the CA (key mode 0600 in a 0700 directory) and an empty CRL")
    init.add_argument("--dir", "--ca-dir", dest="ca_dir", metavar="DIR", required=True, help="new CA directory")
    init.add_argument("--site", required=True, help="site name (gateway.site), in the CA's name")
    init.add_argument("--days", type=int, default=CA_DAYS, help=f"CA lifetime (default {CA_DAYS})")
    server = sub.add_parser("server-cert", help="a server certificate for the gateway's Mosquitto")
    _ca_options(server)
    server.add_argument("--name", required=True, help="the server's name (CN; also a DNS name unless --dns/--ip)")
    server.add_argument("--dns", action="append", default=[], help="a DNS name devices use (repeatable)")
    server.add_argument("--ip", action="append", default=[], help="an IP address devices use (repeatable)")
    server.add_argument("--days", type=int, default=SERVER_DAYS, help=f"lifetime (default {SERVER_DAYS})")
    server.add_argument("--out", required=True, metavar="DIR", help="writes server.key, server.crt, ca.crt, crl.pem")
    for name, text in (
        ("issue", "a device certificate (the saved one while it is good)"),
        ("renew", "a new key and certificate for a device"),
    ):
        cmd = sub.add_parser(name, help=f"{text}, saved in <ca dir>/devices/<id>/")
        _ca_options(cmd)
        cmd.add_argument("device", help="device id (the certificate's CN, the broker username)")
        cmd.add_argument("--days", type=int, help=f"lifetime (default: [ca] device_days, else {DEVICE_DAYS})")
    revoke = sub.add_parser("revoke", help="revoke every live certificate of a device and write the CRL")
    _ca_options(revoke)
    revoke.add_argument("device", help="device id")
    revoke.add_argument("--crl", metavar="FILE", help=f"the CRL to write (default <ca dir>/{CRL_NAME})")
    revoke.add_argument("--crl-days", type=int, default=CRL_DAYS, help=f"CRL validity (default {CRL_DAYS})")
    crl = sub.add_parser("crl", help="write a new CRL (before the last one expires!)")
    _ca_options(crl)
    crl.add_argument("--out", metavar="FILE", help=f"default <ca dir>/{CRL_NAME}")
    crl.add_argument("--days", type=int, default=CRL_DAYS, help=f"validity (default {CRL_DAYS})")
    listing = sub.add_parser("list", help="every certificate: expiry, days left, renew / revoked / expired")
    _ca_options(listing)
    return p


def _settings(args: argparse.Namespace) -> CASettings:
    if args.config is None:
        return CASettings()
    path = Path(args.config)
    return ca_settings(path, load_devices_file(path))


def _directory(args: argparse.Namespace, settings: CASettings) -> Path:
    if args.ca_dir:
        return Path(args.ca_dir)
    if settings.dir is not None:
        return settings.dir
    if args.config:
        raise FlashError(f'{args.config} has no [ca] dir: add [ca] dir = "ca" (relative to it), or pass --dir DIR')
    raise FlashError("which CA? pass --dir DIR, or --config devices.toml with a [ca] dir")


def status(cert: IssuedCert, now: datetime) -> str:
    """revoked, expired, renew (less than a third of its lifetime left) or ok."""
    if cert.revoked:
        return "revoked"
    if cert.expired(now):
        return "expired"
    return "renew" if renew_due(cert, now) else "ok"


def do_ca(state: State, args: argparse.Namespace) -> None:
    command = args.ca_command
    if command == "init":
        directory = Path(args.ca_dir)
        ca = FleetCA.init(directory, args.site, days=args.days)
        crl = ca.write_crl(directory / CRL_NAME)
        state.say(
            f"CA for site {args.site} in {directory}: key {directory / 'ca.key'} (mode 600, keep a backup offline)"
        )
        state.say(f"CA certificate {directory / 'ca.crt'}, expires {ca.not_after:%Y-%m-%d}; empty CRL {crl}")
        return
    settings = _settings(args)
    ca = FleetCA.open(_directory(args, settings))
    if command == "server-cert":
        out = Path(args.out)
        files = ca.issue_server(args.name, out, dns=args.dns, ips=args.ip, days=args.days)
        crl = ca.write_crl(out / CRL_NAME)
        state.say(f"server certificate {files.cert} for {args.name} ({', '.join([*args.dns, *args.ip]) or args.name})")
        state.say(f"key {files.key} (mode 600, not shown), CA {files.ca}, CRL {crl}")
        state.say("for the gateway's [broker.tls]: ca_file, cert_file, key_file, crl_file (docs/gateway.md)")
    elif command in ("issue", "renew"):
        days = args.days if args.days is not None else settings.device_days
        outcome = obtain(ca, args.device, days=days, renew=command == "renew")
        state.say(outcome.describe())
        state.say(f"to the board: edgeline-flash config --device {args.device} --config devices.toml")
    elif command == "revoke":
        serials = ca.revoke(args.device)
        crl = ca.write_crl(Path(args.crl) if args.crl else ca.directory / CRL_NAME, days=args.crl_days)
        what = ", ".join(f"{s:x}" for s in serials) if serials else "none left unrevoked"
        state.say(f"revoked {args.device}: serial(s) {what}; CRL written to {crl}")
        state.say(
            "copy it to the gateway's broker.tls.crl_file and reload Mosquitto "
            "(sudo systemctl reload mosquitto): refused from the next connect"
        )
    elif command == "crl":
        crl = ca.write_crl(Path(args.out) if args.out else ca.directory / CRL_NAME, days=args.days)
        state.say(f"CRL written to {crl}, valid {args.days} days: rewrite it before then")
    else:  # list
        now = datetime.now(UTC)
        state.say(f"{'kind':<7} {'id':<32} {'serial':<32} {'expires':<10} {'days':>5}  status")
        for cert in ca.issued():
            days_left = (cert.not_after - now).days
            state.say(
                f"{cert.kind:<7} {cert.device_id:<32} {cert.serial:032x} {cert.not_after:%Y-%m-%d} "
                f"{days_left:>5}  {status(cert, now)}"
            )
