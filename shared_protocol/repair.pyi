from collections.abc import Sequence
from typing import TypeAlias

# stub-only alias (no runtime name; stubtest checks the stubs against the code)
_Buffer: TypeAlias = bytes | bytearray | memoryview

RESEND_MAX_RANGES: int
LOSS_MAX_RANGES: int
LOSS_REASONS: tuple[int, ...]

def resend_arg(ranges: Sequence[tuple[int, int, int]]) -> bytes: ...
def resend_ranges(arg: _Buffer) -> list[tuple[int, int, int]]: ...
def loss_size(count: int) -> int: ...
def encode_loss(
    buf: bytearray | memoryview, boot: int, seq: int, ticks: int, ranges: Sequence[tuple[int, int, int, int]]
) -> int: ...
def decode_loss_fields(frame: _Buffer, n: int) -> dict[str, list[tuple[int, int, int, int]]]: ...
