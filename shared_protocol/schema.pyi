from collections.abc import Sequence
from typing import TypeAlias

# stub-only alias (no runtime name; stubtest checks the stubs against the code)
_Buffer: TypeAlias = bytes | bytearray | memoryview
_Channel: TypeAlias = tuple[str, str, float, float, int, float]  # (name, unit, scale, offset, sample_type, rate_hz)

SAMPLE_SIZES: dict[int, int]
MAX_CHANNELS: int
MAX_NAME: int
MAX_UNIT: int

def channel_table(channels: Sequence[Sequence[object]]) -> bytes: ...
def table_schema_id(table: _Buffer) -> int: ...
def schema_id(channels: Sequence[Sequence[object]]) -> int: ...
def parse_channel_table(data: _Buffer, offset: int, end: int) -> tuple[list[_Channel], int]: ...
