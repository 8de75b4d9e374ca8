"""A stream session: one granted window of one stream, owning the stream's lease.

The session is where durability is kept (PROTOCOL §3.5): it writes bytes to the part with
their sha256, checkpoints them in the background at the configured cadence (write → fsync →
record, never reported before), and at the window's end either finishes (every byte
durable, the stream completed when it was the last window) or abandons (whatever can be
made durable is kept, and the bytes still missing are counted from there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from .. import metrics
from ..app import StreamRoute
from ..events import StreamEvents
from ..protocol import Status
from ..settings import ServerSettings
from ..state import StateStore, StateUnavailable, StreamRecord
from ..storage import Digest, PartWriter, StorageError
from .errors import status_of_error
from .hashing import BATCH, TrailingHash
from .outcomes import Completion, completion_of

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["NoWriter", "SessionHost", "StopCallback", "StreamSession"]

log = logging.getLogger("xstream.engine")


class SessionHost(Protocol):
    """What a session needs of the engine that made it."""

    store: StateStore
    settings: ServerSettings
    events: StreamEvents

    def complete(self, session: StreamSession) -> Awaitable[Completion]: ...

    def session_ended(self, session: StreamSession) -> None: ...

    def durable_advanced(self, session: StreamSession) -> None:
        """More of the stream is durable (live downloads may send it)."""
        ...


StopCallback = Callable[[Status, str], None]


class StreamSession:
    """One granted window of one stream on one connection; it owns the stream's lease."""

    def __init__(
        self,
        host: SessionHost,
        record: StreamRecord,
        route: StreamRoute,
        writer: PartWriter,
        owner: str,
        window: int,
        hasher: _Hash | None,
        client: str,
    ) -> None:
        self._host = host
        self.record = record
        self.route = route
        self.key = record.key
        self.owner = owner
        self.window = window
        self.client = client
        self._writer = writer
        self.durable = writer.offset
        # The transport feeding this window (set by ``StreamEngine.receive``): its bytes are
        # counted in the metrics at checkpoints, up to ``_counted``.
        self.transport: str | None = None
        self._counted = writer.offset
        self._window_end = writer.offset + window
        # The running sha256, trailing the writer in a thread of its own (see ``hashing``);
        # None when the prefix must be hashed from the part file at completion.
        self._trail = (
            TrailingHash(hasher, writer.offset, writer.read_at) if hasher is not None else None
        )
        self._settings = host.settings
        self._last_checkpoint = time.monotonic()
        self._checkpointing: asyncio.Task[None] | None = None
        self._checkpoint_error: Exception | None = None
        # Armed while written bytes wait for their checkpoint, so that a window that goes
        # quiet still gets its bytes recorded within ``checkpoint_seconds``.
        self._idle_timer: asyncio.TimerHandle | None = None
        # Set once the window is being settled: no background checkpoint starts after that.
        self._settling = False
        self._released = asyncio.Event()
        self._lease_held = True
        self._on_stop: StopCallback | None = None
        # While a window's bytes await their verification (see ``hold``): what they are fed
        # to instead of the running sha256.
        self._held: _HeldDigests | None = None

    @property
    def written(self) -> int:
        return self._writer.offset

    @property
    def unwritten(self) -> int:
        """Bytes granted to this window that have not reached storage yet."""
        return max(0, self._window_end - self._writer.offset)

    def on_stop(self, callback: StopCallback) -> None:
        """The transport's way to be told to end this window early (takeover, shutdown)."""
        self._on_stop = callback

    @property
    def inline(self) -> bool:
        """True when the transport may store bytes with ``write_now`` (no await)."""
        return self._writer.inline

    def hold(self, check: Digest) -> None:
        """Keep this window's bytes tentative until ``commit`` or ``roll_back``: they are fed
        to ``check`` and to a copy of the running sha256, and no checkpoint records them.
        (A tus PATCH with ``Upload-Checksum``: none of its bytes may count before the
        checksum is verified.)"""
        if self.written != self.durable or self._checkpointing is not None:
            raise RuntimeError("hold() must come before the window's first byte")
        # Held bytes are hashed as they come (both digests), from the event loop: the window
        # starts where the trailing hash is (it was handed over caught up, see LiveStreams).
        running = self._trail.current() if self._trail is not None else None
        self._held = _HeldDigests(check, running.copy() if running is not None else None)

    def commit(self) -> None:
        """The held bytes are verified: they count from now on (checkpoints, the sha256)."""
        held, self._held = self._held, None
        if held is not None:
            self._trail = (
                TrailingHash(held.running, self.written, self._writer.read_at)
                if held.running is not None
                else None
            )

    async def roll_back(self) -> None:
        """The held bytes are refused: cut the part back to the durable offset; the running
        sha256 never saw them. If the cut fails they stay held, so no checkpoint records
        them (the next window cuts the part back to the recorded offset anyway)."""
        if self._held is not None and self.written > self.durable:
            await self._writer.truncate(self.durable)
        self._held = None

    def _digest(self) -> Digest | None:
        """What the writer feeds: held bytes, and the bytes of a window under one hashing
        batch (a thread trip would cost more than the hash); the trail hashes the others."""
        if self._held is not None:
            return self._held
        if self._trail is not None and self.window < BATCH:
            return self._trail.inline_digest()
        return None

    def write_now(self, data: memoryview) -> None:
        """Store raw bytes from the event loop (see ``inline``)."""
        if self._checkpoint_error is not None:
            raise self._checkpoint_error
        try:
            digest = self._digest()
            self._writer.write_now(data, digest)
        except StorageError:
            self._write_failed()
            raise
        self._after_write(digest)

    async def write(self, data: memoryview) -> None:
        """Store raw bytes through the storage's thread pool."""
        if self._checkpoint_error is not None:
            raise self._checkpoint_error
        try:
            digest = self._digest()
            await self._writer.write(data, digest)
        except StorageError:
            self._write_failed()
            raise
        self._after_write(digest)

    def _write_failed(self) -> None:
        """A partial write: the part is hashed from storage at completion."""
        if self._trail is not None:
            self._trail.abandon()
        if self._held is not None:
            self._held.running = None

    def _after_write(self, digest: Digest | None) -> None:
        """Feed the trailing hash; start a checkpoint when the byte or time cadence says so
        (never for held bytes)."""
        if self._held is None and self._trail is not None:
            if digest is not None:  # the writer fed the running hash itself
                self._trail.fed(self.written)
            else:
                self._trail.written(self.written)
        self._consider_checkpoint()

    def _consider_checkpoint(self) -> None:
        """Start a background checkpoint when the byte or time cadence says so and none is
        running; otherwise make sure the written bytes are looked at again within
        ``checkpoint_seconds`` (a running checkpoint looks again when it ends)."""
        if self._held is not None or self._settling or self._checkpoint_error is not None:
            return
        pending = self.written - self.durable
        if pending <= 0:
            return
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        if (
            pending >= self._settings.checkpoint_bytes
            or time.monotonic() - self._last_checkpoint >= self._settings.checkpoint_seconds
        ):
            # In the background: writing goes on while the fsync runs.
            self._last_checkpoint = time.monotonic()
            self._checkpointing = asyncio.get_running_loop().create_task(
                self._checkpoint_to(self.written, background=True)
            )
        elif self._idle_timer is None:
            self._idle_timer = asyncio.get_running_loop().call_at(
                self._idle_deadline(), self._idle_timer_fired
            )

    def _idle_deadline(self) -> float:
        # The timer runs on the loop's clock; the cadence is kept on time.monotonic().
        loop = asyncio.get_running_loop()
        wait = self._last_checkpoint + self._settings.checkpoint_seconds - time.monotonic()
        return loop.time() + max(0.0, wait)

    def _idle_timer_fired(self) -> None:
        self._idle_timer = None
        self._consider_checkpoint()

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    async def _checkpoint_to(self, offset: int, *, background: bool = False) -> None:
        """write → fsync → record, for the bytes written before ``offset``. A background
        checkpoint looks at what was written meanwhile when it ends, so that a burst that
        passed the byte cadence while it ran is not left waiting for the next write."""
        self._count_received()
        started = time.perf_counter()
        try:
            await self._writer.sync()
            await self._host.store.checkpoint(self.key, self.owner, offset)
        except Exception as exc:
            self._checkpoint_error = exc
            return
        metrics.checkpointed(time.perf_counter() - started)
        if offset > self.durable:
            self.durable = offset
            self._host.durable_advanced(self)
        self._host.events.progress(self.record, self.durable)
        if background:
            self._checkpointing = None
            self._consider_checkpoint()

    def _count_received(self) -> None:
        if self.transport is not None and self.written > self._counted:
            metrics.received(self.transport, self.written - self._counted)
            self._counted = self.written

    async def _settle_background_checkpoint(self) -> None:
        self._settling = True
        self._cancel_idle_timer()
        while self._checkpointing is not None:
            running = self._checkpointing
            await running
            if self._checkpointing is running:
                self._checkpointing = None
        if self._checkpoint_error is not None:
            raise self._checkpoint_error

    async def checkpoint(self) -> None:
        """Settle: on return every byte written so far is durable (or an error is raised)."""
        if self._held is not None and self.written > self.durable:
            raise StorageError("bytes awaiting their verification cannot be made durable")
        await self._settle_background_checkpoint()
        try:
            self._last_checkpoint = time.monotonic()
            if self.written != self.durable:
                await self._checkpoint_to(self.written)
                if self._checkpoint_error is not None:
                    raise self._checkpoint_error
        finally:
            self._settling = False

    async def finish(self) -> Completion:
        """The window is in: make it durable, complete the stream if it was the last one."""
        if self.record.result is not None:
            await self.release()
            return completion_of(self.key, self.record.result)
        try:
            if self.written < self.record.total:
                await self.checkpoint()
                return Completion(self.key, self.record.total - self.durable)
            # The last window: the completion record (offset = total) is the checkpoint.
            if self._trail is not None and self._held is None:
                self._trail.catch_up_soon()
            await self._settle_background_checkpoint()
            await self._writer.sync()
            return await self._host.complete(self)
        except Exception as exc:
            return self._failure(exc)
        finally:
            await self.release()

    async def abandon(self, status: Status, message: str) -> Completion:
        """End the window early (client gone, timeout, takeover, shutdown): keep every byte
        that can be made durable and say how many are still missing."""
        try:
            await self.checkpoint()
        except Exception as exc:
            return self._failure(exc)
        finally:
            await self.release()
        return Completion(self.key, self.record.total - self.durable, status, message)

    def _failure(self, exc: BaseException) -> Completion:
        status, message = status_of_error(exc)
        if status == Status.SERVER_ERROR:
            log.error("stream %s failed", self.key, exc_info=exc)
        else:
            log.warning("stream %s: %s %s (%s)", self.key, int(status), message, exc)
        return Completion(self.key, self.record.total - self.durable, status, message)

    async def release(self) -> None:
        if self._released.is_set():
            return
        self._settling = True
        self._cancel_idle_timer()
        self._count_received()
        try:
            if self._trail is not None:
                # Caught up before the part is closed: LiveStreams keeps the hash for the
                # stream's next window, and no job may read a closed descriptor.
                await self._trail.settle()
            with contextlib.suppress(StorageError):
                await self._writer.close()
            if self._lease_held:
                with contextlib.suppress(StateUnavailable):
                    await self._host.store.release_lease(self.key, self.owner)
        finally:
            self._host.session_ended(self)
            self._released.set()

    def lease_released(self) -> None:
        """The store released the lease with the stream's completion record."""
        self._lease_held = False

    @property
    def hasher(self) -> _Hash | None:
        """The running sha256 of bytes [0, written) if it has caught up, else None (then the
        part has to be hashed from storage: the stream was resumed in another process, or a
        write failed). ``settled_hasher`` waits for it to catch up."""
        return self._trail.current() if self._trail is not None and self._held is None else None

    async def settled_hasher(self) -> _Hash | None:
        """The running sha256 of bytes [0, written), once the trailing hash has caught up;
        None when the part has to be hashed from storage."""
        if self._trail is None or self._held is not None:
            return None
        return await self._trail.settle()

    def stop_soon(self, status: Status, message: str) -> None:
        """Ask the owning transport to end this window (it answers ``status``)."""
        if self._on_stop is not None and not self._released.is_set():
            self._on_stop(status, message)

    async def stop(self, status: Status, message: str) -> None:
        """End this window, and wait until its bytes are settled and the lease is free."""
        self.stop_soon(status, message)
        try:
            await asyncio.wait_for(self._released.wait(), self._settings.takeover_timeout)
        except TimeoutError:
            log.warning("stream %s: owner did not let go in time; its lease is revoked", self.key)
            await self.release()


class _HeldDigests:
    """Feeds held bytes to the checksum being verified and to the running sha256's copy."""

    def __init__(self, check: Digest, running: _Hash | None) -> None:
        self.check = check
        self.running = running

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self.check.update(data)
        if self.running is not None:
            self.running.update(data)


class NoWriter:
    """The writer of a window of zero bytes on a complete stream."""

    def __init__(self, offset: int) -> None:
        self._offset = offset

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def inline(self) -> bool:
        return False

    def write_now(self, data: bytes | bytearray | memoryview, digest: Digest | None = None) -> None:
        raise StorageError("the stream is complete")

    async def write(
        self, data: bytes | bytearray | memoryview, digest: Digest | None = None
    ) -> None:
        raise StorageError("the stream is complete")

    async def sync(self) -> None:
        return None

    async def truncate(self, offset: int) -> None:
        raise StorageError("the stream is complete")

    def read_at(self, offset: int, into: memoryview) -> int:
        raise StorageError("the stream is complete")

    async def close(self) -> None:
        return None
