"""Downloads (PROTOCOL §5): a stream in the other direction.

A ``Download`` serves bytes ``[offset, total)`` of a stored stream, and only bytes that
are durable (§3.5): written, fsynced and recorded. For a complete stream that is all of
them. A *live* download serves a stream that is still being uploaded (a relay, §8): it
sends what is durable, then waits for the uploader's next checkpoint — woken by the
session that makes it (``LiveStreams.notify``), not by polling — and ends at the total.
An uploader in another server instance wakes nobody here: the record is looked at again
after ``RECHECK_SECONDS`` of quiet.

The transport asks for the next bytes with ``read(size)`` when its peer can take them
(the driver waits for the socket's write buffer to drain first), so a download holds one
chunk in memory at a time whatever its size.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from ..state import StateStore, StateUnavailable, StreamState
from ..storage import Storage, StorageError
from .registry import LiveStreams

__all__ = ["RECHECK_SECONDS", "Download", "DownloadFailed"]

# A live download with no news from this process looks at the record again this often.
RECHECK_SECONDS: Final = 1.0


class DownloadFailed(Exception):
    """The content cannot be sent whole (it was deleted, storage failed, the download was
    cancelled): the transport ends the connection and the client resumes later."""


class Download:
    """An accepted pull: ``total − offset`` bytes of stream ``key`` to send."""

    def __init__(
        self,
        *,
        key: str,
        total: int,
        offset: int,
        buffer_size: int,
        checksum: str | None,
        live: bool,
        available: int,
        store: StateStore,
        storage: Storage,
        streams: LiveStreams,
    ) -> None:
        self.key = key
        self.total = total
        self.offset = offset
        self.buffer_size = buffer_size
        self.checksum = checksum  # sha256 hex of the whole content, when known
        self.live = live
        self.position = offset  # the next byte to read
        self._available = available  # bytes known to be durable
        self._store = store
        self._storage = storage
        self._streams = streams
        self._wake = asyncio.Event()
        self._cancelled = False
        self._closed = False
        if live:
            streams.watch(key, self._wake)

    @property
    def remaining(self) -> int:
        return self.total - self.position

    async def read(self, size: int) -> bytes:
        """The next at most ``size`` bytes (fewer at the end of what is durable); ``b""``
        once all are read. A live download waits here for more to become durable."""
        if size < 1:
            raise ValueError("read size must be positive")
        while True:
            if self._cancelled:
                raise DownloadFailed("download cancelled")
            if self.position >= self.total:
                return b""
            if self.position < self._available:
                wanted = min(size, self._available - self.position)
                try:
                    chunk = await self._storage.read(self.key, self.position, wanted)
                except StorageError as exc:
                    raise DownloadFailed(f"stream {self.key}: {exc}") from exc
                if not chunk:
                    raise DownloadFailed(f"stream {self.key}: stored bytes are missing")
                self.position += len(chunk)
                return chunk
            if not self.live:
                raise DownloadFailed(f"stream {self.key}: no more durable bytes")
            # Cleared before looking, so that a checkpoint made while we look still wakes us.
            self._wake.clear()
            self._available = await self._durable()
            if self.position < self._available or self._cancelled:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECHECK_SECONDS):
                    await self._wake.wait()

    async def _durable(self) -> int:
        """How many bytes of the stream are durable now."""
        session = self._streams.sessions.get(self.key)
        if session is not None:
            return min(self.total, max(self._available, session.durable))
        try:
            record = await self._store.get(self.key)
        except StateUnavailable as exc:
            raise DownloadFailed("state store unreachable") from exc
        if record is None:
            raise DownloadFailed(f"stream {self.key} is gone")
        if record.state is not StreamState.ACTIVE:
            return self.total
        return min(self.total, max(self._available, record.offset))

    async def chunks(self, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """Every remaining byte, in pieces of at most ``size``; closes when done."""
        try:
            while chunk := await self.read(size):
                yield chunk
        finally:
            self.close()

    def cancel(self) -> None:
        """End the download from outside (its connection is gone, shutdown): a ``read``
        waiting for bytes raises ``DownloadFailed`` at once."""
        self._cancelled = True
        self._wake.set()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.live:
                self._streams.unwatch(self.key, self._wake)
