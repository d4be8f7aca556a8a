"""What a handler reads of a verified bundle (gateway/updates/bundle.py ``Bundle``): the model,
config and firmware handlers take these, so tests may hand them a small stand-in."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol


class BundleLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def counter(self) -> int: ...
    @property
    def entry(self) -> str: ...
    @property
    def bundle_id(self) -> str: ...


class BundleFileLike(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...


class FirmwareBundleLike(BundleLike, Protocol):
    """A firmware bundle: also its files and its ``firmware`` section (arch, version, rollout)."""

    @property
    def files(self) -> Iterable[BundleFileLike]: ...
    @property
    def firmware(self) -> dict[str, Any] | None: ...
