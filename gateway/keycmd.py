"""``edgeline-gateway keys status|rotate|retire``: the data keys of encryption at rest.

status   every key of the key ring, and what the forward queue and the raw log hold under each
rotate   a new active key (a running gateway writes under it within a second); old keys stay
retire   re-encrypt what the forward queue still holds under an old key, then delete the key;
         refused while raw log chunks need it (unless ``--rawlog reencrypt`` or ``drop``) and
         while a gateway runs.  ``retire plain`` re-encrypts what was written before encryption
         was on (and zeroes the freed pages).

The scheme: gateway/atrest.py; for users: docs/gateway.md "Encryption at rest".
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from gateway import config as config_mod
from gateway import rawlog
from gateway.atrest import EncryptionSettings, KeyRing, key_name, open_keyring
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.forward.queue import LANES, ForwardQueue, key_usage

PLAIN = "plain"


class KeysError(GatewayError):
    """A ``keys`` command that cannot be done; the message says why and what to do."""


def cmd_keys(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    if cfg.encryption is None:
        raise KeysError(
            f"[encryption] is not enabled in {cfg.source}: set enabled = true (docs/gateway.md, Encryption at rest)"
        )
    ring = open_keyring(cfg.encryption)
    try:
        if args.action == "status":
            _status(cfg, cfg.encryption, ring)
        elif args.action == "rotate":
            old = [key_name(k.id) for k in ring.infos()]
            new = ring.rotate()
            print(f"key {key_name(new)} is now active (a running gateway writes under it within a second);")
            print(f"key(s) {', '.join(old)} stay for reading until retired (`edgeline-gateway keys retire KEY`)")
        else:
            _retire(cfg, ring, args.key, args.rawlog)
    finally:
        ring.close()
    return 0


def setup(p: argparse.ArgumentParser, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    config_arg(sub.add_parser("status", help="the keys, and what the forward queue and the raw log hold under each"))
    config_arg(sub.add_parser("rotate", help="make a new active key (old ones stay for reading)"))
    r = sub.add_parser("retire", help="re-encrypt what is queued under an old key, then delete it (gateway stopped)")
    config_arg(r)
    r.add_argument("key", help=f"the key id (8 hex digits, from `keys status`), or {PLAIN!r}")
    r.add_argument(
        "--rawlog",
        choices=("reencrypt", "drop"),
        help="raw log chunks under the key: re-encrypt them under the active key, or delete them",
    )


def _paths(cfg: Config) -> tuple[Path | None, Path]:
    data = Path(cfg.gateway.data_dir)
    queue = None
    if cfg.forward is not None:
        db = cfg.forward.db_path if cfg.forward.db_path is not None else Path("forward.db")
        queue = db if db.is_absolute() else data / db
    return queue, data / "rawlog.sqlite"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _status(cfg: Config, settings: EncryptionSettings, ring: KeyRing) -> None:
    queue_path, rawlog_path = _paths(cfg)
    queued = key_usage(queue_path) if queue_path is not None else {}
    chunks = rawlog.key_usage(rawlog_path)
    print(f"key directory {settings.key_dir} (sealer {settings.sealer}), active key {key_name(ring.active_id)}")
    rows = [(k.id, "active" if k.active else "old", _when(k.created), str(k.next_epoch)) for k in ring.infos()]
    rows += [(k, "unknown", "-", "-") for k in sorted(set(queued) | set(chunks)) if k and k not in ring]
    if 0 in queued or 0 in chunks:
        rows.append((0, "plain", "-", "-"))
    queue_head = f"forward queue ({'/'.join(LANES)})"
    print(f"{'key':9} {'state':7} {'created':24} {'epochs':>6}  {queue_head:40} raw log")
    for kid, state, created, epochs in rows:
        lanes = queued.get(kid, [0] * len(LANES))
        use = chunks.get(kid)
        raw = "-" if use is None else f"{use.chunks} chunks, {use.frames} frames, received up to {_when(use.newest)}"
        name = PLAIN if kid == 0 else key_name(kid)
        queue = f"{sum(lanes)} ({'/'.join(map(str, lanes))})"
        print(f"{name:9} {state:7} {created:24} {epochs:>6}  {queue:40} {raw}")


def _retire(cfg: Config, ring: KeyRing, key: str, rawlog_action: str | None) -> None:
    kid = _key_id(key)
    if kid == ring.active_id:
        raise KeysError(f"key {key} is the active key: run `edgeline-gateway keys rotate` first")
    if kid and kid not in ring:
        raise KeysError(f"key {key} is not in the key ring {ring.directory} (see `edgeline-gateway keys status`)")
    queue_path, rawlog_path = _paths(cfg)
    with ring.exclusive():  # no gateway or forwarder writes meanwhile
        use = rawlog.key_usage(rawlog_path).get(kid)
        if use is not None and rawlog_action is None:
            raise KeysError(
                f"the raw log {rawlog_path} holds {use.chunks} chunks ({use.frames} frames of {use.devices}"
                f" device(s), received {_when(use.oldest)} to {_when(use.newest)}) under {key}; they age out by"
                f" {_when(use.newest + cfg.rawlog.max_age_s)} (rawlog.max_age_s): retire then, or pass"
                " --rawlog reencrypt (re-encrypt them under the active key) or --rawlog drop (delete them)"
            )
        scrub = kid == 0  # plaintext from before encryption: zero the pages it leaves
        if queue_path is not None and queue_path.exists():
            _retire_queue(cfg, ring, queue_path, kid, scrub=scrub)
        if use is not None:
            _retire_rawlog(cfg, ring, rawlog_path, kid, action=rawlog_action, scrub=scrub)
        if kid:
            ring.retire(kid)
            print(f"key {key} retired (deleted from {ring.directory})")


def _retire_queue(cfg: Config, ring: KeyRing, path: Path, kid: int, *, scrub: bool) -> None:
    assert cfg.forward is not None
    queue = ForwardQueue(path, budget_bytes=cfg.forward.disk_budget_bytes, cipher=ring.cipher())
    queue.open()
    try:
        done, unreadable = queue.reencrypt(kid, scrub=scrub)
    finally:
        queue.close()
    print(f"forward queue {path}: {done} record(s) re-encrypted under {key_name(ring.active_id)}", end="")
    print(f", {unreadable} unreadable (deleted, counted)" if unreadable else "")


def _retire_rawlog(cfg: Config, ring: KeyRing, path: Path, kid: int, *, action: str | None, scrub: bool) -> None:
    log = rawlog.RawLog(path, max_bytes=cfg.rawlog.max_bytes, max_age_s=cfg.rawlog.max_age_s, cipher=ring.cipher())
    try:
        if action == "reencrypt":
            done, unreadable = log.reencrypt(kid, scrub=scrub)
            print(f"raw log {path}: {done} chunk(s) re-encrypted", end="")
            print(f", {unreadable} unreadable (deleted)" if unreadable else "")
        else:
            print(f"raw log {path}: {log.drop_key(kid, scrub=scrub)} frame(s) deleted")
    finally:
        log.close()


def _key_id(text: str) -> int:
    if text == PLAIN:
        return 0
    try:
        kid = int(text, 16)
    except ValueError:
        kid = -1
    if len(text) != 8 or kid <= 0:
        raise KeysError(f"key: expected a key id of 8 hex digits (see `edgeline-gateway keys status`) or {PLAIN!r}")
    return kid
