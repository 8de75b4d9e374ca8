"""The TCP transport: a thin asyncio driver around the sans-IO ``ServerConnection``.

Packet mode: bytes land in one scratch buffer shared by every connection of the server (an
idle connection owns no read buffer), are fed to the state machine, and a per-connection
pump task answers the events in order.

Raw mode: the socket reads straight into a buffer of the negotiated size ``B2``, never into a
new Python object. With inline writes (the default) every read is stored at once, with its
sha256, from the event loop, and the buffer is reused; a per-iteration read budget keeps
hundreds of streams from starving everything else. With pooled writes there are two
buffers: a full one goes to storage through the thread pool while the other fills, and if
storage is slower than the network, reading pauses (backpressure) until the write is done.
A blocking write in inline mode is backpressure too: nothing is read meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Final, cast

from ..protocol import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    InvalidRequest,
    Limits,
    Mode,
    RemoteProtocolError,
    Request,
    ServerConnection,
    Status,
    StreamRequest,
    WindowReceived,
)
from ..service import Accepted, Completion, StreamService, StreamSession, status_of_error

if TYPE_CHECKING:
    from ..settings import ServerSettings

__all__ = ["PacketProtocol", "TcpTransportServer"]

log = logging.getLogger("xstream.tcp")

_SCRATCH_SIZE: Final = 256 * 1024
# Stop reading pipelined requests while this much input waits to be parsed.
_MAX_PENDING_INPUT: Final = 4 * 1024 * 1024
# Replies to pipelined requests are gathered up to this size before they are written.
_REPLY_BATCH: Final = 64 * 1024
# Raw bytes all connections may read in one event-loop iteration (see count_read).
_ITERATION_BUDGET: Final = 4 * 1024 * 1024
# How long raw bytes still arriving after a final error packet are read and dropped.
_LINGER_SECONDS: Final = 2.0


class TcpTransportServer:
    """Owns the listening socket and the connections it accepted."""

    def __init__(self, service: StreamService, settings: ServerSettings) -> None:
        self.service = service
        self.settings = settings
        self.limits = Limits(settings.max_header_block, settings.max_headers, settings.max_payload)
        self.payload_limit = service.app.payload_limit(settings.max_payload)
        self.scratch = bytearray(_SCRATCH_SIZE)
        self.connections: set[PacketProtocol] = set()
        self._all_closed = asyncio.Event()
        self._settling: set[asyncio.Task[None]] = set()
        self._iteration_bytes = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: PacketProtocol(self), host, port, reuse_address=True, backlog=4096
        )
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    def count_read(self, nbytes: int) -> bool:
        """Count raw bytes read in this loop iteration; True once they pass the budget, when
        the reader should sit the next iteration out. libuv reads a busy socket up to 32
        times per iteration and inline writes hash and store every read: without a budget,
        hundreds of streams hold the loop for seconds and starve Redis replies (so
        checkpoints and leases) and every other connection."""
        if not self._iteration_bytes:
            asyncio.get_running_loop().call_soon(self._new_iteration)
        self._iteration_bytes += nbytes
        return self._iteration_bytes > _ITERATION_BUDGET

    def _new_iteration(self) -> None:
        self._iteration_bytes = 0

    def track(self, settling: asyncio.Task[None]) -> None:
        """Windows being settled outlive their connection; shutdown waits for them."""
        self._settling.add(settling)
        settling.add_done_callback(self._settling.discard)

    def forget(self, connection: PacketProtocol) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._all_closed.set()

    async def close(self) -> None:
        """Stop accepting; end every window with 503 (bytes kept), close idle connections;
        whatever is still open after ``shutdown_timeout`` is cut."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.shut_down()
        if self.connections:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.shutdown_timeout):
                    await self._all_closed.wait()
        for connection in list(self.connections):
            connection.force_close()
        if self._settling:
            await asyncio.wait(list(self._settling), timeout=self.settings.shutdown_timeout)
        if self._server is not None:
            await self._server.wait_closed()


class PacketProtocol(asyncio.BufferedProtocol):
    def __init__(self, server: TcpTransportServer) -> None:
        self.server = server
        self.service = server.service
        self.settings = server.settings
        self.conn = ServerConnection(server.limits, server.payload_limit)
        self.transport: asyncio.Transport | None = None
        self.client = "?"
        self._loop = asyncio.get_running_loop()
        self._pump: asyncio.Task[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._replies: list[bytes] = []
        self._replies_size = 0
        self._reading_paused = False
        self._last_activity = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        # Raw mode.
        self._session: StreamSession | None = None
        self._buffers: list[bytearray] = []
        self._views: list[memoryview] = []
        self._current = 0
        self._fill = 0
        self._flush: asyncio.Task[None] | None = None
        self._flush_error: BaseException | None = None
        self._stop: tuple[Status, str] | None = None
        self._window_over: asyncio.Event | None = None
        self._ending = False
        self._inline = False
        self._draining = False
        self._linger: asyncio.TimerHandle | None = None

    # ---- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self.server.connections.add(self)
        self._arm_timer(self.settings.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self._closing = True
        for timer in (self._timer, self._linger):
            if timer is not None:
                timer.cancel()
        self._writable.set()
        if self._session is not None:
            # Gone in the middle of a window: settle what arrived; nobody is left to answer.
            self._end_window(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.conn.mode is Mode.RAW and self._buffers:
            view = self._views[self._current]
            end = min(len(view), self._fill + self.conn.raw_remaining)
            return view[self._fill : end]
        return memoryview(self.server.scratch)

    def buffer_updated(self, nbytes: int) -> None:
        self._last_activity = time.monotonic()
        if self._draining:
            return  # after our last packet: input is read only to be dropped
        if self.conn.mode is Mode.RAW and self._buffers:
            self._fill += nbytes
            done = self.conn.raw_received(nbytes)
            # Inline writes store every read while it is warm in the CPU cache; pooled
            # writes wait for a full buffer, to make few trips to the pool.
            if done is not None or self._inline or self._fill == len(self._views[self._current]):
                self._buffer_full(done)
            # (Pooled writes yield at every trip to the pool, and their backpressure owns
            # pausing and resuming: only inline writes need the budget.)
            if self._inline and done is None and self.server.count_read(nbytes):
                self._yield_reading()
            return
        self.conn.receive_data(self.server.scratch[:nbytes])
        if self.conn.pending_input > _MAX_PENDING_INPUT:
            self._pause_reading()  # the pump resumes reading once it has caught up
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ---- timeouts ----------------------------------------------------------------------
    def _arm_timer(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, self._check_timeout)

    def _check_timeout(self) -> None:
        if self._closing:
            return
        raw = self.conn.mode is Mode.RAW
        limit = self.settings.raw_stall_timeout if raw else self.settings.idle_timeout
        # Outside raw mode a running pump means a handler or a negotiation is at work.
        busy = not raw and self._pump is not None and not self._pump.done()
        idle_for = time.monotonic() - self._last_activity
        if busy or idle_for < limit:
            self._arm_timer(limit if busy else max(0.05, limit - idle_for))
            return
        if raw:
            self.stop_window(Status.TIMEOUT, f"no raw bytes for {limit:g} s")
        else:
            log.info("%s: idle for %.0f s, closing", self.client, idle_for)
            self._abort(Status.TIMEOUT, f"idle for {limit:g} s")
        self._arm_timer(limit)

    # ---- packet mode -------------------------------------------------------------------
    def _wake(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = self._loop.create_task(self._run_pump())

    async def _run_pump(self) -> None:
        """Answer events in order; nothing unexpected may end it silently: it is logged with
        its traceback, the client gets ``500`` and the connection closes (a window in
        progress is settled at its durable offset by ``connection_lost``)."""
        try:
            await self._answer_events()
        except Exception:
            log.exception("%s: unexpected error; closing the connection", self.client)
            self._abort(Status.SERVER_ERROR, "internal error")

    async def _answer_events(self) -> None:
        """Replies to a pipelined batch leave in one write."""
        conn = self.conn
        try:
            while not self._closing:
                try:
                    event = conn.next_event()
                except RemoteProtocolError as exc:
                    log.info("%s: protocol error %d: %s", self.client, int(exc.status), exc.message)
                    self._abort(exc.status, exc.message)
                    return
                if event is NEED_DATA and self.service.shutting_down:
                    self._abort(Status.UNAVAILABLE, "server shutting down")
                    return
                if event is NEED_DATA or event is PAUSED:
                    if event is NEED_DATA:
                        self._resume_reading()
                    return
                if isinstance(event, ConnectionClosed):
                    self._close()
                    return
                if not self._writable.is_set():
                    self._flush_replies()
                    await self._writable.wait()
                if isinstance(event, Request):
                    response = await self.service.handle_request(event)
                    self._queue_reply(
                        conn.respond(
                            event,
                            response.status,
                            payload=response.payload,
                            data_format=response.data_format,
                            message=response.message,
                            headers=response.headers,
                        )
                    )
                elif isinstance(event, InvalidRequest):
                    self._queue_reply(conn.respond(event, event.status, message=event.message))
                elif isinstance(event, StreamRequest):
                    self._flush_replies()
                    await self._negotiate(event)
                elif isinstance(event, WindowReceived):  # pragma: no cover - raw mode does it
                    raise AssertionError("window events are handled in raw mode")
        finally:
            self._flush_replies()

    def _queue_reply(self, data: bytes) -> None:
        self._replies.append(data)
        self._replies_size += len(data)
        if self._replies_size >= _REPLY_BATCH:
            self._flush_replies()

    def _flush_replies(self) -> None:
        if self._replies:
            self._write(b"".join(self._replies))
            self._replies.clear()
            self._replies_size = 0

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self._closing:
            self.transport.write(data)

    def _abort(self, status: Status, message: str) -> None:
        self._flush_replies()
        self._write(self.conn.abort(status, message))
        self._close()

    def _close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def _close_after_last_packet(self) -> None:
        """Close while the client may still be sending raw bytes. Closing a socket with
        unread input sends a reset, and a reset can destroy our last packet on its way: so
        send FIN after it, discard what still arrives, and close when the client does (or
        after a short linger)."""
        self._closing = self._draining = True
        transport = self.transport
        if transport is None:
            return
        if transport.can_write_eof():
            transport.write_eof()
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._linger = self._loop.call_later(_LINGER_SECONDS, transport.abort)

    def shut_down(self) -> None:
        """Server shutdown: end a window with 503, close an idle connection."""
        if self._session is not None:
            self.stop_window(Status.UNAVAILABLE, "server shutting down")
        elif self._pump is None or self._pump.done():
            self._abort(Status.UNAVAILABLE, "server shutting down")

    def force_close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # ---- streams -----------------------------------------------------------------------
    async def _negotiate(self, request: StreamRequest) -> None:
        outcome = await self.service.open_stream(request, self.client)
        if not isinstance(outcome, Accepted):
            self._write(self.conn.refuse_stream(outcome.status, outcome.message))
            return
        session = outcome.session
        if self._closing:  # the client left while we negotiated
            await session.abandon(Status.UNAVAILABLE, "client gone")
            return
        self._write(
            self.conn.accept_stream(
                key=session.key,
                offset=outcome.offset,
                window=outcome.window,
                buffer_size=outcome.buffer_size,
            )
        )
        if outcome.window == 0:
            self._send_completion(await session.finish())
            return
        early = self.conn.take_early_raw()
        if early:
            # The client sent raw bytes before our accept reply (PROTOCOL §6): they are the
            # start of the window, whatever their size. Stored before any later byte is read.
            self._pause_reading()
            try:
                await session.write(memoryview(early))
            except Exception as exc:
                self._send_completion(await session.abandon(*status_of_error(exc)))
                if self.conn.mode is Mode.CLOSED:
                    self._close_after_last_packet()
                return
            done = self.conn.raw_received(len(early))
            if self._closing or done is not None:
                completion = await (session.finish() if done else session.abandon(Status.OK, ""))
                self._send_completion(completion)
                return
        await self._start_window(session, outcome.buffer_size).wait()

    def _start_window(self, session: StreamSession, buffer_size: int) -> asyncio.Event:
        """Enter raw mode; the event is set once the window is settled."""
        self._session = session
        size = min(buffer_size, session.window)
        # Inline writes free the buffer at once; otherwise one fills while one is written.
        self._inline = session.inline
        self._buffers = [bytearray(size) for _ in range(1 if self._inline else 2)]
        self._views = [memoryview(b) for b in self._buffers]
        self._current = self._fill = 0
        self._flush = None
        self._flush_error = None
        self._stop = None
        window_over = self._window_over = asyncio.Event()
        session.on_stop(self.stop_window)
        self._last_activity = time.monotonic()
        self._arm_timer(self.settings.raw_stall_timeout)
        self._resume_reading()
        return window_over

    def _buffer_full(self, done: WindowReceived | None) -> None:
        """The current buffer is full or the window is complete: send it to storage."""
        if self._ending:
            return  # the window is being settled; it stores the current buffer itself
        session = self._session
        assert session is not None
        if self._inline:
            # Into the page cache right here, as a bare uvloop server would: measured, a
            # trip through the thread pool per buffer costs ~45% more CPU per byte.
            try:
                session.write_now(self._views[self._current][: self._fill])
            except Exception as exc:
                self._flush_error = exc
                self._pause_reading()
                self._end_window(None, error=exc)
                return
            self._fill = 0
            if done is not None:
                self._end_window(done)
            return
        if self._flush is not None and not self._flush.done():
            # Storage is behind: hold the socket until the previous buffer is written.
            self._pause_reading()
            self._flush.add_done_callback(lambda _: self._buffer_full(done))
            return
        if self._flush_error is not None:
            return
        view = self._views[self._current][: self._fill]
        self._flush = self._loop.create_task(self._write_buffer(session, view, done))
        self._current = (self._current + 1) % len(self._buffers)
        self._fill = 0
        self._resume_reading()

    async def _write_buffer(
        self, session: StreamSession, view: memoryview, done: WindowReceived | None
    ) -> None:
        try:
            await session.write(view)
        except Exception as exc:
            self._flush_error = exc
            self._pause_reading()
            self._end_window(None, error=exc)
            return
        if done is not None:
            self._end_window(done)

    def stop_window(self, status: Status, message: str) -> None:
        """End the window early and answer ``status`` (timeout, takeover, shutdown)."""
        if self._session is None or self._stop is not None:
            return
        self._stop = (status, message)
        self._pause_reading()
        self._end_window(None)

    def _end_window(self, done: WindowReceived | None, error: BaseException | None = None) -> None:
        session = self._session
        if session is None or self._ending:
            return
        self._ending = True
        self.server.track(self._loop.create_task(self._settle_window(session, done, error)))

    async def _settle_window(
        self, session: StreamSession, done: WindowReceived | None, error: BaseException | None
    ) -> None:
        """Finish the window: all bytes in (``done``), storage failed (``error``), told to
        stop (``self._stop``), or the client left (none of them)."""
        try:
            while self._flush is not None and not self._flush.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._flush)
            error = error or self._flush_error
            if done is None and error is None and self._fill:
                # The bytes of an unfinished buffer are stored before the checkpoint.
                try:
                    await session.write(self._views[self._current][: self._fill])
                except Exception as exc:
                    error = exc
            if done is not None and error is None:
                completion = await session.finish()
            else:
                status, message = (
                    status_of_error(error) if error else self._stop or (Status.OK, "client left")
                )
                completion = await session.abandon(status, message)
        finally:
            self._session = None
            self._buffers, self._views = [], []
            self._ending = False
        if done is None and error is None and self._stop is None:
            log.info("stream %s: client left, %d bytes missing", session.key, completion.missing)
        else:
            self._send_completion(completion)
            if self.conn.mode is Mode.CLOSED:
                self._close_after_last_packet()
        self._resume_reading()
        self._last_activity = time.monotonic()
        self._arm_timer(self.settings.idle_timeout)
        assert self._window_over is not None
        self._window_over.set()

    def _send_completion(self, completion: Completion) -> None:
        if self._closing:
            return
        self._write(
            self.conn.complete(
                key=completion.key,
                missing=completion.missing,
                status=completion.status,
                message=completion.message,
                payload=completion.payload,
                data_format=completion.data_format,
                headers=completion.headers,
            )
        )

    def _yield_reading(self) -> None:
        """Skip a loop iteration: see ``TcpTransportServer.count_read``."""
        if not self._reading_paused and self.transport is not None and not self._closing:
            self._pause_reading()
            self._loop.call_soon(self._end_yield)

    def _end_yield(self) -> None:
        if self._stop is None and not self._ending:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self._closing:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self._closing:
            self._reading_paused = False
            self.transport.resume_reading()
