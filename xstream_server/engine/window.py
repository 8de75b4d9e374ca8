"""A raw window: exactly W granted bytes of one stream, received and made durable.

The engine's half of receiving raw bytes, shared by every transport. A transport that reads
into memory it is given (TCP, uTP) asks ``buffer()`` for where the next bytes go and reports
them with ``received(n)``: the bytes land in the window's own buffers, never in a new Python
object. A transport that is handed bytes (a WebSocket message, an HTTP body chunk, bytes
read before the accept reply) passes them to ``write(data)``. Either way the window stores
them through its session, and tells the transport when to stop reading (``ReadControl``).

With inline writes (the default) every read is stored at once, from the event loop, into
the page cache (its sha256 follows in the hashing thread, see ``hashing``); all windows
read into one buffer the engine shares among them (a stalled window holds no memory), each
read as large as that buffer (the largest buffer any route grants), not only B2. With
pooled writes there are two buffers: a full one goes to storage through the thread pool
while the other fills, and if storage is slower than the network, reading pauses until the
write is done.

The window ends by itself when all W bytes are in, when storage fails, when it is told to
``stop`` (timeout, takeover, shutdown) or when the client is gone (``client_gone``). It is
then settled: the bytes of an unfinished buffer are stored, then the session finishes or
abandons; ``result()`` gives the completion to send, or None when nobody is left to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from ..protocol import Status
from .errors import status_of_error
from .outcomes import Accepted, Completion

__all__ = ["SETTLING", "STORAGE", "PartCheck", "RawWindow", "ReadControl"]

log = logging.getLogger("xstream.engine")

# Why a window asks its transport not to read (see ReadControl).
STORAGE: Final = "storage"  # the previous buffer is still being written
SETTLING: Final = "settling"  # the window is over; its bytes are being settled


class ReadControl(Protocol):
    """The transport's reading tap. Reading goes on once every reason it was paused for has
    been resumed; the transport resumes ``SETTLING`` itself once it has the result."""

    def pause_reading(self, reason: str) -> None: ...

    def resume_reading(self, reason: str) -> None: ...


class CheckDigest(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class PartCheck:
    """A checksum the window's bytes must match before any of them count (a tus PATCH's
    ``Upload-Checksum``): ``digest`` is fed every byte, ``expected`` is what it must give.
    Until the window's end the bytes are neither checkpointed nor in the stream's sha256;
    then they are kept if the body was whole and matches, and cut off otherwise (the
    offset does not move).

    ``expected`` may be a future, for a checksum that comes after the bytes (an HTTP
    trailer): the window waits for it once its bytes are in. Its result None means no
    usable checksum came; the bytes are cut off then too (answered 400, not 460). Whoever
    gives the future must settle it when the bytes end, however they end."""

    digest: CheckDigest
    expected: bytes | asyncio.Future[bytes | None]

    async def refusal(self) -> tuple[Status, str] | None:
        """None when the bytes match; else the answer, the bytes being discarded."""
        given = self.expected
        expected = given if isinstance(given, bytes) else await given
        if expected is None:
            return Status.BAD_REQUEST, "no usable checksum came after the bytes: part discarded"
        if not hmac.compare_digest(self.digest.digest(), expected):
            return Status.CHECKSUM_MISMATCH, "checksum mismatch: part discarded"
        return None


class RawWindow:
    def __init__(
        self,
        accepted: Accepted,
        reading: ReadControl,
        track: Callable[[asyncio.Task[None]], None],
        shared: memoryview,
        check: PartCheck | None = None,
    ) -> None:
        session = accepted.session
        self.session = session
        self.key = session.key
        self.remaining = accepted.window
        self.inline = session.inline
        size = min(accepted.buffer_size, accepted.window)
        if self.inline:
            # Inline writes store every read before the next read of any connection: all
            # windows share one buffer, and a stalled window holds no memory of its own.
            # So a read may take the whole shared buffer (the largest buffer a route
            # grants), whatever B2 this window was granted: B2 bounds the memory a window
            # holds, and an inline window holds none. Measured on loopback, reads of 1 MiB
            # instead of 256 KiB take ~25 % less CPU per byte (fewer recv and write calls).
            self._views = [shared[: min(len(shared), accepted.window)]]
        else:
            # Pooled writes: one buffer fills while the other is written.
            self._views = [memoryview(bytearray(size)) for _ in range(2)]
        self._current = self._fill = 0
        self._flush: asyncio.Task[None] | None = None
        self._flush_error: BaseException | None = None
        self._stop: tuple[Status, str] | None = None
        self._ending = False
        self._reading = reading
        self._track = track
        self._loop = asyncio.get_running_loop()
        self._outcome: asyncio.Future[Completion | None] = self._loop.create_future()
        self._check = check
        self._body_ended = False
        if check is not None:
            session.hold(check.digest)
        session.on_stop(self.stop)

    @property
    def ending(self) -> bool:
        """True once the window stopped taking bytes (it is being settled)."""
        return self._ending

    # ---- bytes in ----------------------------------------------------------------------
    def buffer(self) -> memoryview:
        """Where the next bytes go: never past the window's end."""
        view = self._views[self._current]
        return view[self._fill : min(len(view), self._fill + self.remaining)]

    def received(self, nbytes: int) -> None:
        """``nbytes`` were read into ``buffer()``."""
        if not 0 <= nbytes <= self.remaining:
            raise ValueError(f"{nbytes} bytes received, {self.remaining} left in the window")
        self._fill += nbytes
        self.remaining -= nbytes
        done = not self.remaining
        # Inline writes store every read while it is warm in the CPU cache; pooled writes
        # wait for a full buffer, to make few trips to the pool.
        if done or self.inline or self._fill == len(self._views[self._current]):
            self._buffer_full(done)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes that arrived in a buffer of their own; returns once storage has taken them
        (or the window ended). Not to be mixed with a partly filled ``buffer()``."""
        view = memoryview(data).cast("B")
        if len(view) > self.remaining:
            raise ValueError(f"{len(view)} bytes written, {self.remaining} left in the window")
        while self._flush is not None and not self._flush.done():
            await asyncio.shield(self._flush)
        if self._ending or self._flush_error is not None or not view:
            return
        if self._fill:
            raise RuntimeError("write() while a buffer is partly filled by received()")
        self.remaining -= len(view)
        done = not self.remaining
        if self.inline:
            self._store_now(view, done)
            return
        self._flush = self._loop.create_task(self._store(view, done))
        await asyncio.shield(self._flush)

    def _buffer_full(self, done: bool) -> None:
        """The current buffer is full or the window is complete: send it to storage."""
        if self._ending:
            return  # the window is being settled; it stores the current buffer itself
        if self.inline:
            # Into the page cache right here, as a bare uvloop server would: measured, a
            # trip through the thread pool per buffer costs ~45% more CPU per byte.
            self._store_now(self._views[self._current][: self._fill], done)
            self._fill = 0
            return
        if self._flush is not None and not self._flush.done():
            # Storage is behind: hold the socket until the previous buffer is written.
            self._reading.pause_reading(STORAGE)
            self._flush.add_done_callback(lambda _: self._buffer_full(done))
            return
        if self._flush_error is not None:
            return
        view = self._views[self._current][: self._fill]
        self._flush = self._loop.create_task(self._store(view, done))
        self._current = (self._current + 1) % len(self._views)
        self._fill = 0
        self._reading.resume_reading(STORAGE)

    def _store_now(self, view: memoryview, done: bool) -> None:
        try:
            self.session.write_now(view)
        except Exception as exc:
            self._flush_error = exc
            self._end(error=exc)
            return
        if done:
            self._end(done=True)

    async def _store(self, view: memoryview, done: bool) -> None:
        try:
            await self.session.write(view)
        except Exception as exc:
            self._flush_error = exc
            self._end(error=exc)
            return
        if done:
            self._end(done=True)

    # ---- the end -----------------------------------------------------------------------
    def stop(self, status: Status, message: str) -> None:
        """End the window early and answer ``status`` (timeout, takeover, shutdown)."""
        if self._ending or self._stop is not None:
            return
        self._stop = (status, message)
        self._end()

    def body_ended(self) -> None:
        """The sender has no more bytes for this window (an HTTP body ended early): settle
        what arrived as a whole part; the completion counts what is still missing."""
        if self._ending or self._stop is not None:
            return
        self._body_ended = True
        self.stop(Status.OK, "body ended")

    def client_gone(self) -> None:
        """The connection is gone: settle what arrived; nobody is left to answer."""
        self._end()

    async def result(self) -> Completion | None:
        """Once settled: the completion to send, or None when the client left."""
        return await self._outcome

    def _end(self, *, done: bool = False, error: BaseException | None = None) -> None:
        if self._ending:
            return
        self._ending = True
        if not done:
            self._reading.pause_reading(SETTLING)
        self._track(self._loop.create_task(self._settle(done, error)))

    async def _settle(self, done: bool, error: BaseException | None) -> None:
        """All bytes in (``done``), storage failed (``error``), told to stop, or the client
        left (none of them)."""
        session = self.session
        try:
            while self._flush is not None and not self._flush.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._flush)
            error = error or self._flush_error
            if not done and error is None and self._fill:
                # The bytes of an unfinished buffer are stored before the checkpoint.
                try:
                    await session.write(self._views[self._current][: self._fill])
                except Exception as exc:
                    error = exc
            refused: tuple[Status, str] | None = None
            if self._check is not None:
                whole = error is None and (done or self._body_ended)
                if whole:
                    refused = await self._check.refusal()
                if whole and refused is None:
                    session.commit()
                else:
                    try:
                        await session.roll_back()
                    except Exception as exc:
                        error = error or exc
            if done and error is None and not refused:
                completion = await session.finish()
            else:
                if refused:
                    status, message = refused
                elif error:
                    status, message = status_of_error(error)
                else:
                    status, message = self._stop or (Status.OK, "client left")
                completion = await session.abandon(status, message)
        except asyncio.CancelledError:
            self._outcome.cancel()
            raise
        except Exception as exc:  # raised to the transport, which logs it and closes
            self._outcome.set_exception(exc)
            return
        finally:
            self._views = []
        if not done and error is None and self._stop is None and not refused:
            log.info(
                "stream %s: client left, %d bytes missing",
                self.key,
                completion.missing,
                extra=self.session.log_fields,
            )
            self._outcome.set_result(None)
        else:
            self._outcome.set_result(completion)
