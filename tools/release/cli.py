"""edgeline-release: make a signing key, pack and sign release bundles, inspect and publish them.

    edgeline-release keygen --out keys/release-2026
    edgeline-release pack model --manifest models/m.json --pipeline vibration --key keys/release-2026.key \\
        --counter 7 --version 1.4 [--site plant1] [--gateway gw1] [--expires-days 30] [--out DIR_OR_FILE]
    edgeline-release pack config --config gateway.toml --key K --counter 3 --version 2026-05-01 ...
    edgeline-release pack firmware --build build/xtensawin --arch xtensawin --key K --counter 2 --version 1.8 \\
        [--device 'esp32-*'] [--canary esp32-01] [--wave 5] [--max-failure-rate 0.2]
    edgeline-release inspect vibration-1.4.bundle [--keys keys/release-2026.pub ...]
    edgeline-release publish vibration-1.4.bundle --broker cloud.example.com:8883 --gateway gw1 [--ca ca.pem ...]

The private key never leaves its 0600 file and is never printed; keep it offline (docs/updates.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import ConfigError
from gateway.updates.bundle import (
    ARCHES,
    Bundle,
    BundleError,
    Counters,
    TrustedKeys,
    key_id,
    load_trusted_keys,
    verify_bundle,
)
from tools.release.errors import ReleaseError
from tools.release.keys import keygen, load_private_key
from tools.release.pack import DAY, build_bundle, config_files, firmware_files, firmware_metadata, model_files
from tools.release.publish import Broker, parse_broker, publish_bundle

PROG = "edgeline-release"


def do_keygen(args: argparse.Namespace) -> int:
    private, public, kid = keygen(Path(args.out))
    print(f"key {kid}: private {private} (0600: keep it offline), public {public} (list it in [updates] trusted_keys)")
    return 0


def do_pack(args: argparse.Namespace) -> int:
    key = load_private_key(Path(args.key))
    firmware = None
    if args.kind == "model":
        files, entry = model_files(Path(args.manifest))
        name = args.pipeline
    elif args.kind == "config":
        files, entry = config_files(Path(args.config), args.public_key or [])
        name = "gateway"
    else:
        files, entry = firmware_files(Path(args.build), args.arch)
        name = f"sensorfw-{args.arch}"
        firmware = firmware_metadata(
            arch=args.arch,
            fw_version=args.fw_version or args.version,
            devices=args.device or ["*"],
            canary=args.canary or [],
            wave=args.wave,
            max_failure_rate=args.max_failure_rate,
        )
    if args.counter < 1:
        raise ReleaseError("--counter: must be >= 1 and above the last release's counter of this kind and name")
    created = time.time()
    out = Path(args.out) if args.out else Path.cwd()
    path = build_bundle(
        out,
        key=key,
        files=files,
        kind=args.kind,
        name=name,
        version=args.version,
        counter=args.counter,
        entry=entry,
        sites=args.site or [],
        gateways=args.gateway or [],
        created=created,
        expires=created + args.expires_days * DAY,
        firmware=firmware,
    )
    check(path, key, sites=args.site or [], gateways=args.gateway or [], now=created)
    print(f"{path}: {args.kind} {name} {args.version}, counter {args.counter}, {len(files)} file(s)")
    return 0


def check(path: Path, key: Ed25519PrivateKey, *, sites: Sequence[str], gateways: Sequence[str], now: float) -> Bundle:
    """The gateway's own check of the packed file (a refused bundle is removed, never shipped)."""
    public = key.public_key()
    try:
        return verify_bundle(
            path,
            keys=TrustedKeys({key_id(public): public}),
            site=sites[0] if sites else "",
            gateway_id=gateways[0] if gateways else "",
            counters=Counters(path.with_name(".no-counters.json")),  # read only: no counters
            now=now,
            max_bytes=1 << 40,
        )
    except BundleError as exc:
        path.unlink()
        raise ReleaseError(f"the packed bundle would be refused, not written: {exc}") from None


def do_inspect(args: argparse.Namespace) -> int:
    """The metadata; with --keys also the gateway's verdict on signature, expiry and hashes
    (target and counter are the gateway's to judge)."""
    path = Path(args.file)
    try:
        if args.keys:
            keys = load_trusted_keys([Path(k) for k in args.keys])
            bundle = verify_bundle(
                path,
                keys=keys,
                site=args.site or "",
                gateway_id=args.gateway or "",
                counters=Counters(path.with_name(".no-counters.json")),
                now=time.time(),
                max_bytes=1 << 40,
            )
            print(json.dumps({"verified": True, **bundle.describe(), "expires": bundle.expires}, indent=1))
            return 0
    except ConfigError as exc:
        raise ReleaseError(str(exc)) from None
    except BundleError as exc:
        print(json.dumps({"verified": False, "reason": exc.reason, "message": str(exc)}, indent=1))
        return 2
    print(json.dumps(read_metadata(path), indent=1, sort_keys=True))
    return 0


def read_metadata(path: Path) -> dict[str, object]:
    import tarfile

    try:
        with tarfile.open(path, "r:") as tar:
            member = tar.getmember("bundle.json")
            if not member.isreg() or member.size > 1 << 20:
                raise ReleaseError(f"{path}: bundle.json is not a small regular file")
            stream = tar.extractfile(member)
            assert stream is not None
            doc = json.loads(stream.read())
    except (tarfile.TarError, KeyError, OSError, ValueError) as exc:
        raise ReleaseError(f"{path}: not a release bundle ({exc})") from None
    if not isinstance(doc, dict):
        raise ReleaseError(f"{path}: bundle.json is not a JSON object")
    return doc


def do_publish(args: argparse.Namespace) -> int:
    host, port = parse_broker(args.broker)
    broker = Broker(
        host=host,
        port=port,
        username=args.username,
        password_file=Path(args.password_file) if args.password_file else None,
        ca_file=Path(args.ca) if args.ca else None,
        cert_file=Path(args.cert) if args.cert else None,
        key_file=Path(args.client_key) if args.client_key else None,
    )
    meta = publish_bundle(
        Path(args.file), broker, gateway=args.gateway, topic_prefix=args.topic_prefix, chunk_size=args.chunk_size
    )
    print(f"published {meta.kind} {meta.name} ({meta.size} bytes, {meta.chunks} chunk(s), id {meta.bundle_id[:12]})")
    return 0


def _common_pack(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", required=True, help="the private signing key (NAME.key of keygen)")
    p.add_argument("--counter", type=int, required=True, help="anti-replay counter: above the last release's")
    p.add_argument("--version", required=True, help="1..32 characters: A-Z a-z 0-9 . _ + -")
    p.add_argument("--site", action="append", help="only for this site (repeat; default any)")
    p.add_argument("--gateway", action="append", help="only for this gateway id (repeat; default any)")
    p.add_argument("--expires-days", type=float, default=30.0, help="valid this long (default 30)")
    p.add_argument("--out", help="output file or directory (default: NAME-VERSION.bundle here)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Sign, inspect and publish edgeline release bundles.")
    sub = parser.add_subparsers(dest="command", required=True)
    kg = sub.add_parser("keygen", help="make a signing key pair NAME.key (0600) and NAME.pub")
    kg.add_argument("--out", required=True, metavar="DIR/NAME")
    kg.set_defaults(func=do_keygen)
    pack = sub.add_parser("pack", help="pack and sign a bundle")
    kinds = pack.add_subparsers(dest="kind", required=True)
    model = kinds.add_parser("model", help="a model manifest .json and its model file")
    model.add_argument("--manifest", required=True)
    model.add_argument("--pipeline", required=True, help="the pipeline name the model is for")
    config = kinds.add_parser("config", help="a gateway.toml")
    config.add_argument("--config", required=True)
    config.add_argument(
        "--public-key",
        action="append",
        type=Path,
        help="a release public key NAME.pub to install beside gateway.toml (key rotation; repeat)",
    )
    fw = kinds.add_parser("firmware", help="a firmware build dir (edgeline-flash build --arch X)")
    fw.add_argument("--build", required=True, help="build/<arch>")
    fw.add_argument("--arch", required=True, choices=ARCHES)
    fw.add_argument("--fw-version", help="the version the board reports (default --version)")
    fw.add_argument("--device", action="append", help="device id glob to update (repeat; default '*')")
    fw.add_argument("--canary", action="append", help="a device updated first (repeat)")
    fw.add_argument("--wave", type=int, default=5, help="devices per wave after the canaries (default 5)")
    fw.add_argument("--max-failure-rate", type=float, default=0.2, help="halt above this (default 0.2)")
    for p in (model, config, fw):
        _common_pack(p)
        p.set_defaults(func=do_pack)
    ins = sub.add_parser("inspect", help="show a bundle's metadata (and verify it with --keys)")
    ins.add_argument("file")
    ins.add_argument("--keys", nargs="+", help="trusted public keys (.pub) to verify against")
    ins.add_argument("--site")
    ins.add_argument("--gateway")
    ins.set_defaults(func=do_inspect)
    pub = sub.add_parser("publish", help="publish a bundle to a gateway through the cloud broker")
    pub.add_argument("file")
    pub.add_argument("--broker", required=True, metavar="HOST:PORT")
    pub.add_argument("--gateway", required=True, help="the gateway id (its [gateway] id)")
    pub.add_argument("--topic-prefix", default="edgeline", help="the gateway's forward.topic_prefix")
    pub.add_argument("--chunk-size", type=int, default=64 * 1024)
    pub.add_argument("--username")
    pub.add_argument("--password-file")
    pub.add_argument("--ca", help="CA certificate (PEM): TLS")
    pub.add_argument("--cert", help="client certificate (PEM)")
    pub.add_argument("--client-key", help="client key (PEM)")
    pub.set_defaults(func=do_publish)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ReleaseError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
