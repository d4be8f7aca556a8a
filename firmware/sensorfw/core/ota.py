# Firmware over the air, the board's side (CMD_OTA; format in shared_protocol/ota.py).
# Loaded only when a CMD_OTA arrives, so it costs no RAM on a board that never gets one.
#
# A transfer goes into the slot the board does not run from (/a/ or /b/, "inactive"):
# the manifest first (fw.manifest.part, checked against the SHA-256 BEGIN's tag covers,
# then for device, arch and counter), then each file as <path>.part, appended chunk by
# chunk (open 'ab', write, close) and renamed to <path> once its SHA-256, read back from
# flash in small blocks with the watchdog fed between them, matches the manifest. When
# the last file is in, ota.json (the A/B loader's state, otaslots.py) names the slot as the
# trial and the board restarts into it. Nothing else ever points at the slot, so a slot
# cut short by a reset or a bad file never runs.
#
# What the board holds is derived from flash alone: ota.rx names the transfer (id,
# lengths, manifest hash, slot); the offset is the manifest's size, then every complete
# file, then the size of the file in progress. A reset or a link loss mid-transfer thus
# resumes where the flash stops; a BEGIN for another transfer drops the old one.

import hashlib
import os
from binascii import hexlify

from sensorfw import unload
from sensorfw.core.app import log
from sensorfw.core.ota_boot import MANIFEST, answer, manifest_header, slot_path
from shared_protocol import ota

RX = "ota.rx"  # the transfer in progress (JSON), at the flash root
KEY = "ota.key"  # the device's 32-byte OTA key, written by the flash tool
PART = ".part"
BLOCK = 512  # read-back block of the file hash
S_IFDIR = 0x4000
NO_RX = (0, "", 0, 0, "")  # no transfer held (transfer ids start at 1)
NO_FILE = (0, 0, "", "")  # no file being written (an empty file is made at once)


def board_arch(board):
    """The firmware arch this board runs (the bundle's firmware.arch): the board layer's
    OTA_ARCH if it has one (CircuitPython: "circuitpython", source files), else the .mpy
    architecture of the MicroPython port."""
    import sys

    arch = getattr(board, "OTA_ARCH", "")
    if arch:
        return arch
    if sys.platform == "linux":
        return "native"
    # the native-code arch the port's .mpy files carry (py/persistentcode.h MP_NATIVE_ARCH_*)
    a = getattr(sys.implementation, "_mpy", 0) >> 10
    if a == 4:
        return "armv6m"
    if a == 10:
        return "xtensawin"
    return "arch%d" % a


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _mkdirs(base, path):
    """The folders of a slot path (a/b/c.mpy -> base/a, base/a/b)."""
    parts = path.split("/")
    d = base
    for p in parts[:-1]:
        d = d + "/" + p
        try:
            os.mkdir(d)
        except OSError:
            pass  # there already


def _rmtree(path, wdt):
    """Remove a slot folder and everything in it, feeding the watchdog between files."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        p = path + "/" + name
        if os.stat(p)[0] & S_IFDIR:
            _rmtree(p, wdt)
        else:
            os.remove(p)
            if wdt is not None:
                wdt.feed()
    os.rmdir(path)


class Receiver:
    def __init__(self, app):
        self.app = app
        self.rx_path = slot_path(app, "", RX)
        self.rx = NO_RX  # (transfer, slot, manifest_len, total_len, manifest sha256 hex)
        self.offset = 0  # the next stream byte expected
        self.file = NO_FILE  # (start, size, sha256 hex, path) of the file being written
        self.buf = bytearray(BLOCK)

    # ------------------------------------------------------------------ state on flash
    def load(self):
        """Take up the transfer ota.rx names; a result code for what was found on flash."""
        import json

        try:
            with open(self.rx_path) as f:
                d = json.load(f)
            rx = (d["transfer"], d["slot"], d["mlen"], d["total"], d["msha"])
        except (OSError, ValueError, KeyError):
            return ota.RECEIVING
        import otaslots as loader

        st = loader.read_state() or {}
        if rx[1] == self.app.slot or rx[1] == st.get("trial", ""):
            _remove(self.rx_path)  # switched already (a reset came before ota.rx went)
            return ota.RECEIVING
        self.rx = rx
        return self._derive()

    def _derive(self):
        """The offset from what is on flash; a piece completed but not checked yet (a reset
        came between its last write and its check) is checked now."""
        mlen = self.rx[2]
        self.file = NO_FILE
        man = self._path(MANIFEST)
        if _size(man) < 0:
            self.offset = max(_size(man + PART), 0)
            return self._done() if self.offset == mlen else ota.RECEIVING
        pos = mlen
        for path, size, digest in self._files(man):
            if _size(self._path(path)) >= 0:
                pos += size
                continue
            self.file = (pos, size, digest, path)
            self.offset = pos + max(_size(self._path(path + PART)), 0)
            return self._done() if self.offset == pos + size else ota.RECEIVING
        self.offset = pos
        return self._done()

    def _path(self, name):
        return slot_path(self.app, self.rx[1], name)

    def _files(self, man):
        """(path, size, sha256 hex) of each file line of a manifest, read line by line."""
        with open(man) as f:
            for _ in range(5):
                f.readline()
            while True:
                line = f.readline()
                if not line:
                    return
                yield ota.parse_file_line(line.rstrip("\n"))

    def drop(self):
        """Forget the transfer and free its slot."""
        if self.rx[0]:
            _remove(self.rx_path)
            _rmtree(slot_path(self.app, self.rx[1]), self.app.wdt)
        self.rx = NO_RX
        self.file = NO_FILE
        self.offset = 0

    # ------------------------------------------------------------------ commands
    def begin(self, transfer, mlen, total, msha, tag):
        app = self.app
        key = None
        try:
            with open(slot_path(app, "", KEY), "rb") as f:
                key = f.read()
        except OSError:
            pass
        if not key or not ota.same_digest(
            ota.hmac_sha256(key, ota.tag_message(app.device_id, transfer, mlen, total, msha)), tag
        ):
            log("OTA BEGIN %d refused: bad tag (%s)" % (transfer, "no ota.key" if not key else "not this device's key"))
            return ota.BAD_TAG
        msha = hexlify(msha).decode()
        if self.rx[0] == transfer and self.rx[2:] == (mlen, total, msha):
            return ota.RECEIVING  # the same transfer again (a resumption): go on from here
        if not 0 < transfer <= ota.MAX_TRANSFER_ID or not 0 < mlen <= total:
            return ota.BAD_MANIFEST
        self.drop()
        import otaslots as loader

        st = loader.read_state() or {}
        active = st.get("active", "")
        slot = "b" if active == "a" else "a"
        if st.get("trial", ""):
            st["trial"] = ""
            st["starts"] = 0
            loader.write_state(st)  # a new update replaces the one on trial
            if app.slot == slot:
                # its files are about to be replaced while it runs: restart into the active
                # slot, where the BEGIN the gateway sends again is taken
                log("OTA BEGIN %d: leaving the trial firmware for the active one first" % transfer)
                _restart(app)
        d = slot_path(app, slot)
        _rmtree(d, app.wdt)
        os.mkdir(d)
        from sensorfw.core.config_store import replace

        replace(
            self.rx_path,
            '{"transfer": %d, "slot": "%s", "mlen": %d, "total": %d, "msha": "%s"}'
            % (transfer, slot, mlen, total, msha),
        )
        self.rx = (transfer, slot, mlen, total, msha)
        log("OTA BEGIN %d: %d bytes into /%s/" % (transfer, total, slot))
        return ota.RECEIVING

    def chunk(self, transfer, offset, data):
        if not self.rx[0] or self.rx[0] != transfer:
            return ota.UNKNOWN_TRANSFER
        if offset != self.offset:
            return ota.RECEIVING  # a repeat or one ahead of a lost chunk: the answer says where
        mlen = self.rx[2]
        while len(data):
            if self.offset < mlen:
                name, end = MANIFEST + PART, mlen
            else:
                f = self.file
                name, end = f[3] + PART, f[0] + f[1]
            n = min(len(data), end - self.offset)
            try:
                with open(self._path(name), "ab") as out:
                    out.write(data[:n])
            except OSError as e:
                log("OTA %d: cannot write %s (%s): transfer dropped" % (transfer, name, e))
                self.drop()
                return ota.NO_SPACE
            self.offset += n
            data = data[n:]
            if self.offset == end:
                r = self._done()
                if r != ota.RECEIVING:
                    return r
        return ota.RECEIVING

    # ------------------------------------------------------------------ completed pieces
    def _done(self):
        """The piece ending at self.offset is complete: check it and move on."""
        mlen, msha = self.rx[2], self.rx[4]
        if not self.file[1] and self.offset == mlen and _size(self._path(MANIFEST)) < 0:
            part = self._path(MANIFEST + PART)
            if self._sha(part) != msha:
                _remove(part)
                self.offset = 0
                log("OTA %d: manifest hash differs: send it again" % self.rx[0])
                return ota.BAD_MANIFEST
            r = self._check_manifest(part)
            if r != ota.RECEIVING:
                self.drop()
                return r
            os.rename(part, self._path(MANIFEST))
        elif self.file[1]:
            start, _, digest, path = self.file
            part = self._path(path + PART)
            if self._sha(part) != digest:
                _remove(part)
                self.offset = start
                log("OTA %d: %s hash differs: dropped, send it again" % (self.rx[0], path))
                return ota.BAD_HASH
            os.rename(part, self._path(path))
        return self._next_file()

    def _next_file(self):
        """Set up the file that starts at self.offset (empty files are made at once);
        after the last one, switch."""
        self.file = NO_FILE
        pos = self.rx[2]
        base = slot_path(self.app, self.rx[1])
        for path, size, digest in self._files(self._path(MANIFEST)):
            if pos == self.offset:
                _mkdirs(base, path)
                if size:
                    self.file = (pos, size, digest, path)
                    _remove(self._path(path + PART))
                    return ota.RECEIVING
                open(self._path(path), "wb").close()
            pos += size
        return self._switch()

    def _check_manifest(self, path):
        """RECEIVING, or the refusal for a manifest that is malformed, for another device
        or arch, or not newer than the running firmware."""
        app = self.app
        try:
            with open(path) as f:
                head = [ota.parse_header_line(i, f.readline().rstrip("\n"))[1] for i in range(5)]
            n = self.rx[2]
            count = 0
            for name, size, _ in self._files(path):
                if name == MANIFEST or name.endswith(PART):
                    raise ValueError("file name %s is reserved" % name)
                n += size
                count += 1
            if not count:
                raise ValueError("the manifest lists no files")
        except (OSError, ValueError) as e:
            log("OTA %d refused: %s" % (self.rx[0], e))
            return ota.BAD_MANIFEST
        _, version, counter, arch, device = head
        running = manifest_header(slot_path(app, app.slot, MANIFEST))
        running = running[1] if running is not None else 0
        r = ota.RECEIVING
        if device != app.device_id or n != self.rx[3]:
            r = ota.BAD_MANIFEST
        elif arch != board_arch(app.board):
            r = ota.WRONG_ARCH
        elif counter <= running:
            r = ota.REPLAYED
        if r != ota.RECEIVING:
            log(
                "OTA %d refused (%s): %s for %s/%s, counter %d (running %d)"
                % (self.rx[0], ota.RESULT_NAMES[r], version, device, arch, counter, running)
            )
        return r

    def _sha(self, path):
        """SHA-256 (hex) of a file read back from flash in small blocks, feeding the watchdog."""
        h = hashlib.sha256()
        buf = self.buf
        mv = memoryview(buf)
        wdt = self.app.wdt
        try:
            with open(path, "rb") as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    h.update(mv[:n])
                    if wdt is not None:
                        wdt.feed()
        except OSError:
            return ""
        return hexlify(h.digest()).decode()

    def _switch(self):
        """Every file is in and checked: the slot goes on trial at the next start."""
        import otaslots as loader

        transfer, slot = self.rx[0], self.rx[1]
        st = loader.read_state() or {"active": ""}
        st["trial"] = slot
        st["starts"] = 0
        st["transfer"] = transfer
        st["rolled_back"] = 0
        loader.write_state(st)
        _remove(self.rx_path)
        log("OTA %d: every file checked: /%s/ boots on trial" % (transfer, slot))
        return ota.SWITCHING


def run(app, arg):
    """Carry out one CMD_OTA and answer it."""
    try:
        sub, transfer, f = ota.parse_arg(arg)
    except ValueError as e:
        log("CMD_OTA refused: %s" % e)
        return
    try:
        r = _run(app, sub, transfer, f)
    except OSError as e:  # the flash failed under a rename, a folder, the slot's removal
        log("OTA %d: flash error (%s): transfer dropped" % (transfer, e))
        app.ota_rx.drop()
        r = ota.NO_SPACE
    rx = app.ota_rx
    held = rx is not None and rx.rx[0]
    answer(app, transfer, r, rx.offset if held and r != ota.UNKNOWN_TRANSFER else 0)
    if r == ota.SWITCHING:
        _restart(app)
    elif not held:
        # no transfer held (refused, aborted, unknown): free the OTA code (~16 KB on a
        # 32-bit board) until the next CMD_OTA
        app.ota_rx = None
        for name in ("sensorfw.core.ota", "sensorfw.core.ota_boot", "shared_protocol.ota", "otaslots"):
            unload(name)


def _run(app, sub, transfer, f):
    rx = app.ota_rx
    if rx is None:
        rx = Receiver(app)
        app.ota_rx = rx
        r = rx.load()  # the first CMD_OTA of this boot: take up what the flash holds
        held = rx.rx[0] or transfer
        if r == ota.SWITCHING:
            return r  # complete before a reset: switch now
        if r != ota.RECEIVING and held == transfer:
            return r
    if sub == ota.OTA_BEGIN:
        return rx.begin(transfer, f[0], f[1], f[2], f[3])
    if sub == ota.OTA_CHUNK:
        return rx.chunk(transfer, f[0], f[1])
    if rx.rx[0] == transfer:
        log("OTA %d aborted" % transfer)
        rx.drop()
    return ota.UNKNOWN_TRANSFER


def _restart(app):
    app.ota_rx = None
    app.shutdown()  # the answer is kept on flash and sent after the restart
    app.board.reset()
