from collections.abc import Sequence
from typing import Any

from shared_protocol.errors import ProtocolError as ProtocolError
from shared_protocol.schema import Channel

Buffer = bytes | bytearray | memoryview

TYPE_NAMES: dict[int, str]

class Frame:
    version: int
    type: int
    flags: int
    boot: int
    seq: int
    ticks: int
    fields: dict[str, Any]
    def __init__(
        self, version: int, ftype: int, flags: int, boot: int, seq: int, ticks: int, fields: dict[str, Any]
    ) -> None: ...
    @property
    def kind(self) -> str: ...

class Schema:
    channels: list[Channel]
    schema_id: int
    nchannels: int
    names: list[str]
    units: list[str]
    scales: list[float]
    offsets: list[float]
    def __init__(self, channels: Sequence[Sequence[Any]]) -> None: ...
    def check(self, nchannels: int, schema_id: int) -> None: ...

def schema_from_birth(frame: Frame | Buffer) -> Schema: ...
def decode(frame: Buffer, schema: Schema | None = None) -> Frame: ...

HEALTH_FIELDS: tuple[str, ...]
