"""The storage interface: where the bytes of streams live.

A stream's bytes go to a *part* while it is incomplete and become a finished object at
completion. The server only relies on this interface, so a second backend (object storage,
another file layout) is a new module, not an edit everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["Digest", "PartInfo", "PartWriter", "Storage", "StorageError", "StorageFull"]


class Digest(Protocol):
    """A running hash (``hashlib.sha256()``) that storage feeds as it writes."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...


class StorageError(Exception):
    """Writing, syncing or finalizing failed; the stream must not acknowledge more bytes."""


class StorageFull(StorageError):
    """Out of space (ENOSPC/EDQUOT)."""


@dataclass(frozen=True, slots=True)
class PartInfo:
    key: str
    size: int
    modified: float  # seconds since the epoch


class PartWriter(Protocol):
    @property
    def offset(self) -> int:
        """Bytes of the part written so far (durable only after ``sync``)."""
        ...

    async def write(
        self, data: bytes | bytearray | memoryview, digest: Digest | None = None
    ) -> None:
        """Append ``data``; when all of it is written, feed it to ``digest`` too. On error,
        ``offset`` counts the bytes that did reach the part and ``digest`` is untouched."""
        ...

    @property
    def inline(self) -> bool:
        """True when ``write_now`` may be called from the event loop: the storage takes
        bytes without blocking for long (a local page cache does)."""
        ...

    def write_now(self, data: bytes | bytearray | memoryview, digest: Digest | None = None) -> None:
        """``write`` without leaving the calling thread; only when ``inline`` is true."""
        ...

    async def sync(self) -> None:
        """Make every written byte survive a crash (fsync)."""
        ...

    async def truncate(self, offset: int) -> None:
        """Cut the part back to ``offset`` bytes (bytes written but refused); writing goes on
        from there."""
        ...

    def read_at(self, offset: int, into: memoryview) -> int:
        """Read written bytes back, at ``offset``, into ``into``; the count read. Blocking,
        called from a worker thread while writing goes on (the stream's sha256 trails the
        writer this way); never for bytes past ``offset``'s writes or after ``close``."""
        ...

    async def close(self) -> None: ...


class Storage(Protocol):
    async def open_part(self, key: str, durable_offset: int) -> PartWriter:
        """Open (creating if needed) the part of ``key`` for appending at the durable offset.

        Reconciles first: bytes beyond ``durable_offset`` are cut off; a part shorter than it
        (its tail was never synced) is appended to at its own length, which the writer's
        ``offset`` reports.
        """
        ...

    async def part_size(self, key: str) -> int | None: ...

    async def is_finished(self, key: str) -> bool:
        """True when ``finalize`` has run for ``key`` (its part is gone)."""
        ...

    async def hash_part(self, key: str, size: int) -> str:
        """sha256 hex digest of the first ``size`` bytes of the part."""
        ...

    async def finalize(self, key: str) -> Path:
        """Turn the part into the finished object, atomically and durably; return its path.
        Idempotent: finalizing a finished key returns its path again."""
        ...

    async def read(self, key: str, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of the part (or, once finished, the object) from ``offset``;
        fewer only at its end. Raises ``StorageError`` when neither exists."""
        ...

    async def discard(self, key: str) -> None:
        """Delete the part of ``key``; a finished object belongs to the app and stays."""
        ...

    async def remove_finished(self, key: str) -> None:
        """Delete the finished object of ``key`` (a stream whose handler never succeeded);
        nothing happens when it is gone already."""
        ...

    async def list_parts(self) -> list[PartInfo]: ...

    def free_space(self) -> int:
        """Bytes that can still be stored."""
        ...

    def finished_path(self, key: str) -> Path: ...
