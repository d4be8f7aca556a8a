"""Firmware over the air (all runtimes): the CMD_OTA argument, the firmware manifest the
board checks, the tag that proves a transfer comes from its gateway, and the EVENT the
board answers with. The gateway builds with this module, the board reads with it; a board
loads it only when a CMD_OTA arrives. Layouts: docs/protocol.md, "Firmware over the air".

A transfer is one byte stream: the manifest (text, below), then every file it lists, in
its order. The gateway opens it with BEGIN, whose tag is an HMAC-SHA256 under the
device's own key (provisioned by the flash tool) over the device id, the transfer id, the
lengths and the manifest's SHA-256; the board then checks each file's SHA-256 against
the manifest as the file completes. CHUNKs carry the bytes at a stream offset; the board
writes only the chunk at the offset it expects and answers every chunk with the offset
it holds now, so a lost, repeated or reordered chunk costs a resend, never a wrong byte,
and a transfer resumes after link loss or a reset from what the board has on flash.

Arguments (little-endian):
    BEGIN  u8 1, u32 transfer, u32 manifest_len, u32 total_len, 32 s manifest sha256, 32 s tag
    CHUNK  u8 2, u32 transfer, u32 offset, data (the rest)
    ABORT  u8 3, u32 transfer

Manifest (UTF-8 lines ending in "\\n"; the first five in this order, then one per file):
    edgeline-fw 1
    version <text without spaces, at most 32 bytes: the BIRTH firmware version>
    counter <integer: above the running firmware's, so an old release cannot be replayed>
    arch <xtensawin | armv6m | native>
    device <device id>
    file <sha256 hex> <size> <path relative to the slot, "/"-separated>

Answer: an EVENT (sequenced, queued and ACKed like every EVENT) with status codes in the
channel byte, as config_change.py does:
    (EV_OTA, ticks, transfer), (EV_OTA_RESULT, ticks, result), (EV_OTA_OFFSET, ticks, offset)
"""

import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


OTA_BEGIN = const(1)
OTA_CHUNK = const(2)
OTA_ABORT = const(3)

EV_OTA_OFFSET = 0xFB  # value: the stream offset the board holds (the next byte it expects)
EV_OTA_RESULT = 0xFC  # value: a RESULT code
EV_OTA = 0xFD  # value: the transfer id; first event of an answer

MAX_TRANSFER_ID = 0x7FFFFFFF  # ids and offsets travel as an EVENT's i32 value
MANIFEST_MAGIC = "edgeline-fw 1"
TAG_CONTEXT = b"edgeline-ota/1\x00"
BEGIN_LEN = 1 + 4 + 4 + 4 + 32 + 32
CHUNK_HEAD = 1 + 4 + 4

# Results; below REFUSED_MIN the transfer goes on (or went well).
RECEIVING = 0  # holding `offset` bytes of the stream; send from there
SWITCHING = 1  # every file checked; the new slot is set to boot on trial, the board restarts
CONFIRMED = 2  # the new firmware published data the gateway stored: it stays
REFUSED_MIN = 3
BAD_TAG = 3  # the tag does not match (no key, another device's key, altered BEGIN)
BAD_MANIFEST = 4  # the manifest is malformed, its hash differs, or it names another device
WRONG_ARCH = 5  # built for another architecture
REPLAYED = 6  # counter not above the running firmware's
BAD_HASH = 7  # a file's SHA-256 differs from the manifest: it was dropped, `offset` is its start
NO_SPACE = 8  # the flash could not take the files
UNKNOWN_TRANSFER = 9  # a CHUNK for a transfer the board does not hold: send BEGIN again
ROLLED_BACK_CRASH = 10  # the new firmware raised at start-up: the board went back to the old one
ROLLED_BACK_UNCONFIRMED = 11  # reset (crash, watchdog, power) before confirming: back to the old one
RESULT_NAMES = (
    "receiving",
    "switching",
    "confirmed",
    "bad_tag",
    "bad_manifest",
    "wrong_arch",
    "replayed",
    "bad_hash",
    "no_space",
    "unknown_transfer",
    "rolled_back_crash",
    "rolled_back_unconfirmed",
)


def begin_arg(transfer, manifest_len, total_len, manifest_sha256, tag):
    """CMD_OTA argument of BEGIN."""
    return struct.pack("<BIII", OTA_BEGIN, transfer, manifest_len, total_len) + manifest_sha256 + tag


def chunk_arg(transfer, offset, data):
    """CMD_OTA argument of CHUNK."""
    return struct.pack("<BII", OTA_CHUNK, transfer, offset) + data


def abort_arg(transfer):
    """CMD_OTA argument of ABORT."""
    return struct.pack("<BI", OTA_ABORT, transfer)


def parse_arg(arg):
    """(sub-op, transfer, fields): BEGIN -> (manifest_len, total_len, manifest_sha256, tag);
    CHUNK -> (offset, data as a memoryview); ABORT -> (). Raises ValueError for a malformed
    argument."""
    n = len(arg)
    if n < 5:
        raise ValueError("CMD_OTA argument of %d bytes" % n)
    sub = arg[0]
    transfer = struct.unpack_from("<I", arg, 1)[0]
    if sub == OTA_CHUNK:
        if n < CHUNK_HEAD:
            raise ValueError("CMD_OTA CHUNK of %d bytes" % n)
        return sub, transfer, (struct.unpack_from("<I", arg, 5)[0], memoryview(arg)[CHUNK_HEAD:])
    if sub == OTA_BEGIN:
        if n != BEGIN_LEN:
            raise ValueError("CMD_OTA BEGIN of %d bytes, not %d" % (n, BEGIN_LEN))
        mlen, total = struct.unpack_from("<II", arg, 5)
        return sub, transfer, (mlen, total, bytes(arg[13:45]), bytes(arg[45:77]))
    if sub == OTA_ABORT:
        return sub, transfer, ()
    raise ValueError("CMD_OTA sub-op %d unknown" % sub)


def tag_message(device, transfer, manifest_len, total_len, manifest_sha256):
    """The bytes BEGIN's tag is computed over."""
    return (
        TAG_CONTEXT
        + device.encode()
        + b"\x00"
        + struct.pack("<III", transfer, manifest_len, total_len)
        + manifest_sha256
    )


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) on hashlib alone: boards have sha256 but no hmac module."""
    import hashlib

    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def same_digest(a, b):
    """Constant-time comparison of two byte strings of equal length."""
    if len(a) != len(b):
        return False
    d = 0
    i = 0
    while i < len(a):
        d |= a[i] ^ b[i]
        i += 1
    return d == 0


def manifest_text(version, counter, arch, device, files):
    """The manifest; files: [(path, size, sha256 hex), ...] in stream order."""
    lines = [MANIFEST_MAGIC, "version " + version, "counter %d" % counter, "arch " + arch, "device " + device]
    for path, size, digest in files:
        lines.append("file %s %d %s" % (digest, size, path))
    return "\n".join(lines) + "\n"


def check_path(path):
    """ValueError unless path is a relative slot path without empty, '.' or '..' parts."""
    if not path or path[0] == "/" or "\\" in path:
        raise ValueError("bad path %r" % (path,))
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ValueError("bad path %r" % (path,))


def parse_header_line(i, line):
    """(key, value) of header line i (0..4) of a manifest; ValueError if malformed."""
    keys = ("edgeline-fw", "version", "counter", "arch", "device")
    parts = line.split(" ")
    if len(parts) != 2 or parts[0] != keys[i]:
        raise ValueError("manifest line %d: expected %r, got %r" % (i + 1, keys[i], line[:40]))
    if i == 0:
        if line != MANIFEST_MAGIC:
            raise ValueError("manifest format %r unknown" % line[:40])
        return keys[0], 1
    if i == 1 and len(parts[1]) > 32:
        raise ValueError("manifest version longer than 32 bytes")
    if i == 2:
        return keys[2], int(parts[1])
    return keys[i], parts[1]


def parse_file_line(line):
    """(path, size, sha256 hex) of a manifest's file line; ValueError if malformed."""
    parts = line.split(" ")
    if len(parts) != 4 or parts[0] != "file" or len(parts[1]) != 64:
        raise ValueError("manifest file line malformed: %r" % line[:60])
    size = int(parts[2])
    if size < 0:
        raise ValueError("negative size in %r" % line[:60])
    check_path(parts[3])
    return parts[3], size, parts[1]


def answer_events(transfer, result, offset):
    """The (code, value) pairs of the board's answer."""
    return [(EV_OTA, transfer), (EV_OTA_RESULT, result), (EV_OTA_OFFSET, offset)]


def read_answer(events):
    """A decoded EVENT's events [(channel, ticks, value), ...] -> None when it is not an OTA
    answer, else {"transfer", "code", "result" (name), "offset"}."""
    if not events or events[0][0] != EV_OTA:
        return None
    out = {"transfer": events[0][2], "code": -1, "result": "unknown", "offset": -1}
    for ch, _ticks, value in events[1:]:
        if ch == EV_OTA_RESULT:
            out["code"] = value
            out["result"] = RESULT_NAMES[value] if 0 <= value < len(RESULT_NAMES) else "unknown"
        elif ch == EV_OTA_OFFSET:
            out["offset"] = value
    return out
