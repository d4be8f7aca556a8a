from collections.abc import Sequence

Buffer = bytes | bytearray | memoryview

Channel = tuple[str, str, float, float, int, float]

SAMPLE_SIZES: dict[int, int]
MAX_CHANNELS: int
MAX_NAME: int
MAX_UNIT: int

def channel_table(channels: Sequence[Sequence[object]]) -> bytes: ...
def table_schema_id(table: Buffer) -> int: ...
def schema_id(channels: Sequence[Sequence[object]]) -> int: ...
def parse_channel_table(data: Buffer, offset: int, end: int) -> tuple[list[Channel], int]: ...
