from array import array
from collections.abc import Sequence

DATA_OVERHEAD: int

class DataEncoder:
    nchannels: int
    max_samples: int
    sample_type: int
    width: int
    schema_id: int
    buf: bytearray
    mv: memoryview
    frame: memoryview
    delta_frames: int
    plain_frames: int
    def __init__(self, nchannels: int, max_samples: int, sample_type: int = 1, schema_id: int = 0) -> None: ...
    def frame_size(self, nsamples: int, delta: bool = False) -> int: ...
    def encode(
        self,
        boot: int,
        seq: int,
        ticks: int,
        period_us: int,
        samples: array[int] | array[float] | Sequence[int] | Sequence[float],
        nsamples: int,
        flags: int = 0,
    ) -> int: ...

def encode_birth(
    buf: bytearray | memoryview,
    boot: int,
    seq: int,
    ticks: int,
    fw_version: str,
    channels: Sequence[Sequence[object]],
    tick_bits: int = 30,
    flags: int = 0,
) -> int: ...
def encode_event(
    buf: bytearray | memoryview,
    boot: int,
    seq: int,
    ticks: int,
    flags: int,
    channels: bytes | bytearray | Sequence[int],
    times: array[int] | Sequence[int],
    values: array[int] | Sequence[int],
    n: int,
) -> int: ...
def encode_health(
    buf: bytearray | memoryview,
    boot: int,
    seq: int,
    ticks: int,
    flags: int,
    uptime_s: int,
    free_heap: int,
    rssi: int,
    battery_mv: int,
    queue_depth: int,
    dropped_frames: int,
    irq_overruns: int,
    worst_latency_us: int,
    jitter_us: int,
) -> int: ...
def encode_death(buf: bytearray | memoryview, boot: int, seq: int, ticks: int) -> int: ...
def encode_ack(
    buf: bytearray | memoryview, boot: int, seq: int, ticks: int, ranges: Sequence[tuple[int, int, int]]
) -> int: ...
def encode_cmd(
    buf: bytearray | memoryview, boot: int, seq: int, ticks: int, cmd_id: int, op: int, arg: bytes = b""
) -> int: ...
def cmd_arg(op: int, *values: int | str | bytes | Sequence[tuple[int, int, int]]) -> bytes: ...
def schema_id(channels: Sequence[Sequence[object]]) -> int: ...
