from collections.abc import Sequence
from typing import Any, TypeAlias

from shared_protocol.errors import ProtocolError as ProtocolError

# stub-only alias (no runtime name; stubtest checks the stubs against the code)
_Buffer: TypeAlias = bytes | bytearray | memoryview
_Channel: TypeAlias = tuple[str, str, float, float, int, float]  # (name, unit, scale, offset, sample_type, rate_hz)

__all__ = ["TYPE_NAMES", "Frame", "ProtocolError", "Schema", "decode", "schema_from_birth"]

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
    channels: list[_Channel]
    schema_id: int
    nchannels: int
    names: list[str]
    units: list[str]
    scales: list[float]
    offsets: list[float]
    def __init__(self, channels: Sequence[Sequence[Any]]) -> None: ...
    def check(self, nchannels: int, schema_id: int) -> None: ...

def schema_from_birth(frame: Frame | _Buffer) -> Schema: ...
def decode(frame: _Buffer, schema: Schema | None = None) -> Frame: ...

HEALTH_FIELDS: tuple[str, ...]
