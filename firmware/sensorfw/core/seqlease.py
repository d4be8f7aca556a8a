# Sequence lease: how far this boot may have numbered its frames, kept on flash.
#
# Frames waiting in RAM (and in the offline queue's unwritten block) are lost on a
# power cut; the gateway must then learn which sequence numbers will never come, or
# it would wait for them forever. Writing the sequence number to flash per frame would
# wear the flash, so the device reserves `lease` numbers at a time: one small write
# (seq.dat) every `lease` frames records "this boot uses no number >= bound". A clean
# stop (deep sleep, reboot command, end of a bounded run) records the exact end.
# After a power cut the next boot reads the bound: everything of the old boot above
# the last frame kept on flash and below the bound is reported as LOSS_UNSAVED, an
# upper bound of what was lost (docs/firmware.md, "Offline queue: guarantees and limits").
#
# Record: magic u16 "ES", boot u16, end u32, exact u8, CRC-32 of the 9 bytes before.

import os
import struct
from binascii import crc32

MAGIC = 0x5345  # state.py reads the record back at boot
FMT = "<HHIB"


def pack(boot, end, exact):
    body = struct.pack(FMT, MAGIC, boot, end, 1 if exact else 0)
    return body + struct.pack("<I", crc32(body) & 0xFFFFFFFF)


def write_file(path, data):
    """Replace `path` atomically enough: a reader also looks at path + ".tmp"."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        os.remove(path)
    except OSError:
        pass
    os.rename(tmp, path)


class SeqLease:
    def __init__(self, path, boot, lease):
        self.path = path
        self.boot = boot
        self.lease = lease
        self.bound = 0  # numbers below this are covered by the record on flash
        self.writes = 0

    def reserve(self, seq):
        """`seq` is about to be used and is not covered: reserve `lease` more numbers."""
        self.bound = seq + self.lease
        write_file(self.path, pack(self.boot, self.bound, False))
        self.writes += 1

    def close(self, next_seq):
        """Clean stop: this boot used exactly the numbers below next_seq (so far)."""
        write_file(self.path, pack(self.boot, next_seq, True))
        self.bound = next_seq
        self.writes += 1
