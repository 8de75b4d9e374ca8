"""The running sha256 of a stream, computed by a thread of its own that trails the writer.

Hashing is the event loop's largest cost (about half of its time on a fast upload), and the
loop has nothing else to wait for. So the loop only writes; every ``BATCH`` bytes, one job
for the hashing thread reads the bytes just written back from the part (from the page
cache, where they still are) and feeds them to the stream's sha256. ``hashlib`` and the
read release the GIL on large buffers, so the hash runs on another core while the loop
reads on. The bytes a job reads are written before the job starts and never change after
(a part only grows while a window is open), so the hash is the same as if it were fed from
memory. A stream's jobs run one at a time, in order; completion waits only for the tail.

Durability does not depend on the hash: checkpoints record offsets, never hash states.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final

from ..storage import StorageError

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["BATCH", "ReadAt", "TrailingHash"]

BATCH: Final = 4 << 20  # bytes per job: few trips, and still in the page cache when read
_CHUNK: Final = 4 << 20  # one read and one update per chunk (both release the GIL)

ReadAt = Callable[[int, memoryview], int]
"""Blocking: read the part's bytes at ``offset`` into the view; the count read."""

_executor: ThreadPoolExecutor | None = None
_local = threading.local()


def _hashing() -> ThreadPoolExecutor:
    """One thread hashes for every stream: SHA-256 runs at ~1.8 GB/s per core, faster than
    one event loop takes bytes in, and one more thread would only compete for the cores."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xstream-hash")
    return _executor


def _feed(hasher: _Hash, read_at: ReadAt, start: int, end: int) -> None:
    """Feed bytes [start, end) of the part to ``hasher`` (in the hashing thread)."""
    buffer: memoryview | None = getattr(_local, "buffer", None)
    if buffer is None:
        buffer = _local.buffer = memoryview(bytearray(_CHUNK))
    position = start
    while position < end:
        n = read_at(position, buffer[: min(_CHUNK, end - position)])
        if n <= 0:
            raise StorageError(f"the part ends at {position}, before {end}")
        hasher.update(buffer[:n])
        position += n


class TrailingHash:
    """The sha256 of bytes [0, ``hashed``) of a part, catching up with the writer."""

    def __init__(self, hasher: _Hash, offset: int, read_at: ReadAt) -> None:
        self._hasher = hasher
        self._read_at = read_at
        self.hashed = offset  # bytes fed to the hasher
        self._queued = offset  # bytes fed or being fed
        self._written = offset
        self._job: asyncio.Future[None] | None = None
        self._tail = False  # no batch to wait for: hash whatever is written
        self.broken = False  # a job failed or a write was cut short: the hash is unusable

    def written(self, end: int) -> None:
        """The part now holds ``end`` bytes: start a job if a batch is ready."""
        self._written = end
        if self._job is None and not self.broken and end - self._queued >= BATCH:
            self._start()

    def inline_digest(self) -> _Hash | None:
        """For a window too small to be worth a job (under one ``BATCH``): the hasher, to be
        fed by the writer itself (then ``written`` follows), when no job is pending."""
        if self.broken or self._job is not None or self.hashed != self._written:
            return None
        return self._hasher

    def fed(self, end: int) -> None:
        """The writer fed the hasher up to ``end`` itself (see ``inline_digest``)."""
        self.hashed = self._queued = self._written = end

    def catch_up_soon(self) -> None:
        """No more bytes are coming soon (the window is in): hash the tail now, while the
        part is being fsynced, rather than when the completion asks for the hash."""
        self._tail = True
        if self._job is None and not self.broken and self._queued < self._written:
            self._start()

    def _start(self) -> None:
        start, end = self._queued, self._written
        self._queued = end
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(_hashing(), _feed, self._hasher, self._read_at, start, end)
        self._job = job
        job.add_done_callback(lambda done: self._finished(done, end))

    def _finished(self, job: asyncio.Future[None], end: int) -> None:
        self._job = None
        if job.cancelled() or job.exception() is not None:
            self.broken = True
            return
        self.hashed = end
        pending = self._written - self._queued
        if not self.broken and (pending >= BATCH or (self._tail and pending > 0)):
            self._start()

    def abandon(self) -> None:
        """The part no longer matches what was fed (a partial write): stop hashing."""
        self.broken = True

    async def idle(self) -> None:
        """Return once no job is reading the part (before it is closed or cut)."""
        while self._job is not None:
            job = self._job
            # Shielded: a cancelled waiter must not leave a job reading a closed file.
            await asyncio.wait([job])

    async def settle(self) -> _Hash | None:
        """Catch up with every byte written: the sha256 of [0, written), or None if broken."""
        await self.idle()
        if not self.broken and self._queued < self._written:
            self._start()
            await self.idle()
        return self.current()

    def current(self) -> _Hash | None:
        """The hasher when it covers every written byte, else None."""
        if self.broken or self.hashed != self._written:
            return None
        return self._hasher
