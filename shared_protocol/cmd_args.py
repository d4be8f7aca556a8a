"""The CMD argument table (all runtimes): the one source for the argument layout
of each CMD op, used by gw_encode.cmd_arg (build), decode.py (gateway-side
decode) and the firmware's command handler. A board loads it only when a CMD
arrives. Layouts: docs/protocol.md, "CMD".
"""

import struct

from shared_protocol.errors import BadField

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# Private consts are inlined by the compiler (no RAM on a board); they mirror
# shared_protocol/__init__.py (tests/protocol/test_roundtrip.py checks it).
_CMD_SET_RATE = const(1)
_CMD_SET_BATCH = const(2)
_CMD_REBOOT = const(3)
_CMD_RAW_BURST = const(4)
_CMD_SET_OUTPUT = const(5)
_CMD_REBIRTH = const(6)
_CMD_CONFIG = const(7)
_CMD_RESEND = const(8)
_CMD_OTA = const(9)

# op -> (struct format, field names) of its argument; the names are the keys of
# decode()'s CMD fields. None: a variable-length argument, CMD_CONFIG (a UTF-8 JSON
# object), CMD_RESEND (a range list, repair.py) and CMD_OTA (ota.py).
CMD_ARGS = {
    _CMD_SET_RATE: ("<I", ("rate_mhz",)),
    _CMD_SET_BATCH: ("<H", ("batch",)),
    _CMD_REBOOT: ("<", ()),
    _CMD_RAW_BURST: ("<H", ("seconds",)),
    _CMD_SET_OUTPUT: ("<BBI", ("output", "value", "duration_ms")),
    _CMD_REBIRTH: ("<", ()),
    _CMD_CONFIG: None,
    _CMD_RESEND: None,
    _CMD_OTA: None,
}


def arg_spec(op):
    """(format, names) of op's argument, or None for a variable-length one; raises
    BadField for an op this protocol version does not know."""
    if op not in CMD_ARGS:
        raise BadField("unknown CMD op %r" % (op,))
    return CMD_ARGS[op]


def arg_size(op):
    """Exact argument length of op in bytes, or None for a variable-length one."""
    spec = arg_spec(op)
    return None if spec is None else struct.calcsize(spec[0])


def arg_values(op, arg):
    """The values of op's fixed-size argument as a tuple in table order, or None for
    a variable-length argument (CMD_CONFIG, CMD_RESEND: the caller parses those);
    raises BadField for an unknown op or a wrong argument length."""
    spec = arg_spec(op)
    if spec is None:
        return None
    size = struct.calcsize(spec[0])
    if len(arg) != size:
        raise BadField("CMD op %d needs a %d-byte argument, got %d" % (op, size, len(arg)))
    return struct.unpack(spec[0], arg)
