"""edgeline shared_protocol: compact binary sensor frames (v1).

Constants only, so a board that imports the package pays for nothing it does
not use. Frame layouts are specified in docs/protocol.md.
"""

PROTOCOL_VERSION = 1

# Frame types (header byte 1).
BIRTH = 1
DATA = 2
EVENT = 3
HEALTH = 4
DEATH = 5
ACK = 6
CMD = 7
LOSS = 8  # device -> gateway: frames it cannot send again (answer to CMD_RESEND)

# Header flags (header byte 2).
FLAG_HISTORICAL = 0x01  # replayed from the device's offline queue
FLAG_DELTA = 0x02  # DATA: first sample raw, then int8 deltas per channel
FLAGS_KNOWN = 0x03  # a v1 decoder rejects any other bit ("flags")

# Sample types (BIRTH channel table and DATA frames).
ST_INT16 = 1
ST_INT32 = 2
ST_FLOAT32 = 3  # IEEE 754 binary32, scale 1 / offset 0 (values exactly as sampled; no FLAG_DELTA)

# CMD operations (gateway -> device).
CMD_SET_RATE = 1  # arg: u32 sample rate in mHz
CMD_SET_BATCH = 2  # arg: u16 samples per DATA frame
CMD_REBOOT = 3  # no arg
CMD_RAW_BURST = 4  # arg: u16 seconds
CMD_SET_OUTPUT = 5  # arg: u8 output index, u8 value, u32 duration_ms
CMD_REBIRTH = 6  # no arg: publish BIRTH again
CMD_CONFIG = 7  # arg: UTF-8 JSON object
CMD_RESEND = 8  # arg: u8 count, count x (u16 boot, u32 first, u32 last): send these frames again
CMD_OTA = 9  # arg: u8 sub-op, u32 transfer, then BEGIN / CHUNK / ABORT fields (shared_protocol/ota.py)

# LOSS range reasons (why the device cannot send those frames again).
LOSS_GONE = 1  # the frames existed and are gone (dropped when the queue was full, or lost at a reset)
LOSS_UNSAVED = 2  # after a power loss: the range ends at the reserved sequence bound, so it may
#                   also hold numbers the device never used (the count is an upper bound)
LOSS_UNUSED = 3  # numbers an earlier boot never used: that boot ended before them (not a loss)
