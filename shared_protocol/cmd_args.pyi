from typing import TypeAlias

# stub-only alias (no runtime name; stubtest checks the stubs against the code)
_Buffer: TypeAlias = bytes | bytearray | memoryview

CMD_ARGS: dict[int, tuple[str, tuple[str, ...]] | None]

def arg_spec(op: int) -> tuple[str, tuple[str, ...]] | None: ...
def arg_size(op: int) -> int | None: ...
def arg_values(op: int, arg: _Buffer) -> tuple[int, ...] | None: ...
