from collections.abc import Sequence

MAX_RANGES: int

def encode_ack(
    buf: bytearray | memoryview, boot: int, seq: int, ticks: int, ranges: Sequence[tuple[int, int, int]]
) -> int: ...
def write_ranges(
    buf: bytearray | memoryview, offset: int, ranges: Sequence[tuple[int, int, int]], what: str
) -> int: ...
def encode_cmd(
    buf: bytearray | memoryview, boot: int, seq: int, ticks: int, cmd_id: int, op: int, arg: bytes = b""
) -> int: ...
def cmd_arg(op: int, *values: int | str | bytes | Sequence[tuple[int, int, int]]) -> bytes: ...
