"""The connection driver: the x-stream packet protocol over any byte-stream transport.

A transport (TCP now; WebSocket and uTP next) gives each connection a ``Channel`` — write,
pause and resume reading, close — and forwards its input here: ``get_buffer()`` then
``buffer_updated(n)`` for a transport that reads into memory it is given, ``data_received``
for one that is handed bytes, and ``connection_lost()``. The driver does the rest, without
knowing the transport:

* packet mode: bytes land in one scratch buffer shared by every connection of a hub (an
  idle connection owns no read buffer), are fed to the sans-IO ``ServerConnection``, and a
  per-connection pump answers the events in order; replies to a pipelined batch leave in
  one write; too much pending input pauses reading;
* raw mode: bytes go straight into the buffers of the engine's ``RawWindow``, which stores
  them and settles the window; a per-iteration read budget keeps hundreds of streams from
  starving everything else;
* notifications (PROTOCOL §8): a reply that carries a feed (``/monitor``) starts a task
  that takes batches from it and hands each to the sans-IO core, which writes it between
  packets or holds it through a stream; one batch at a time, and none while the client
  is not reading, so a monitor holds bounded memory;
* pulls (downloads): the engine's ``Download`` gives the content's durable bytes one chunk
  at a time, each written once the transport's write buffer has drained below its
  high-water mark (backpressure), so no download is held in memory whole;
* timeouts (408 for an idle connection or a stalled window), shutdown (503), and any
  unexpected error (logged with its traceback, 500, the connection closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Final, Protocol

from .. import metrics
from ..engine import (
    Completion,
    Download,
    DownloadFailed,
    Engine,
    RawWindow,
    Refused,
    Response,
)
from ..protocol import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    InvalidRequest,
    Limits,
    Mode,
    PullRequest,
    RemoteProtocolError,
    Request,
    ServerConnection,
    Status,
    StreamRequest,
)
from .flow import INPUT, YIELD, FlowControl
from .limits import SharedLimits

if TYPE_CHECKING:
    from ..app import NotificationFeed
    from ..settings import ServerSettings

__all__ = ["Channel", "ConnectionDriver", "ConnectionHub"]

log = logging.getLogger("xstream.transport")

_SCRATCH_SIZE: Final = 256 * 1024
# Replies to pipelined requests are gathered up to this size before they are written.
_REPLY_BATCH: Final = 64 * 1024
# Raw bytes all connections may read in one event-loop iteration (see count_read).
_ITERATION_BUDGET: Final = 4 * 1024 * 1024
_EARLY: Final = "early"  # reading waits while bytes sent before the accept are stored
# Content is read from storage in pieces of this size (at least the client's buffer).
_SEND_CHUNK: Final = 1024 * 1024


class Channel(Protocol):
    """What the driver needs of a connection's transport."""

    def write(self, data: bytes) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None:
        """Close once what was written is sent."""
        ...

    def abort(self) -> None: ...

    def close_after_last_packet(self) -> None:
        """Close while the client may still be sending raw bytes, without destroying the
        last packet (TCP: FIN, then read and drop until the client closes or a linger)."""
        ...


class ConnectionHub:
    """What the connections of one listener share: the engine, limits, the scratch buffer,
    the read budget, and the list of open connections for shutdown."""

    def __init__(
        self,
        engine: Engine,
        settings: ServerSettings,
        shared: SharedLimits | None = None,
        transport: str = metrics.TCP,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.transport = transport  # its name in the metrics
        self.shared = shared or SharedLimits(
            settings.max_connections_per_address, settings.input_budget
        )
        self.limits = Limits(settings.max_header_block, settings.max_headers, settings.max_payload)
        self.payload_limit = engine.payload_limit()
        # Reading pauses while more input waits to be parsed than the largest packet a
        # route takes: a connection holds at most one packet and one read.
        self.max_pending_input = 8 + settings.max_header_block + engine.largest_payload()
        self.scratch = bytearray(_SCRATCH_SIZE)
        self.connections: set[ConnectionDriver] = set()
        self._all_closed = asyncio.Event()
        self._iteration_bytes = 0

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

    def forget(self, connection: ConnectionDriver) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._all_closed.set()

    async def close(self) -> None:
        """End every window with 503 (bytes kept), close idle connections; whatever is still
        open after ``shutdown_timeout`` is cut."""
        for connection in list(self.connections):
            connection.shut_down()
        if self.connections:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.shutdown_timeout):
                    await self._all_closed.wait()
        for connection in list(self.connections):
            connection.channel.abort()


class ConnectionDriver:
    def __init__(self, hub: ConnectionHub, channel: Channel, client: str) -> None:
        self.hub = hub
        self.engine = hub.engine
        self.settings = hub.settings
        self.channel = channel
        self.client = client
        self.conn = ServerConnection(hub.limits, hub.payload_limit)
        self.flow = FlowControl(channel.pause_reading, channel.resume_reading)
        self._loop = asyncio.get_running_loop()
        self._pump: asyncio.Task[None] | None = None
        self._replies: list[bytes] = []
        self._replies_size = 0
        self._last_activity = time.monotonic()
        self._packet_started: float | None = None  # first byte of a packet not yet whole
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._draining = False
        self._window: RawWindow | None = None
        self._download: Download | None = None
        self._input_counted = 0  # this connection's share of the input budget
        self._feed: NotificationFeed | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._held_sent = asyncio.Event()  # held notifications have left (or none were)
        self._held_sent.set()
        self._admitted = hub.shared.admit(client)
        hub.connections.add(self)
        metrics.connection_opened(hub.transport)
        if not self._admitted:
            log.warning("%s: too many connections from this address; refused", client)
            self._abort(Status.TOO_MANY_STREAMS, "too many connections from this address")
        self._arm_timer(min(self.settings.idle_timeout, self.settings.packet_timeout))

    # ---- input from the transport --------------------------------------------------------
    def _raw_window(self) -> RawWindow | None:
        """The window raw bytes go to now, if any."""
        window = self._window
        if window is None or window.ending or self._draining or self.conn.mode is not Mode.RAW:
            return None
        return window

    def get_buffer(self) -> memoryview:
        window = self._raw_window()
        return window.buffer() if window is not None else memoryview(self.hub.scratch)

    def buffer_updated(self, nbytes: int) -> None:
        self._last_activity = time.monotonic()
        if self._draining:
            return  # after our last packet: input is read only to be dropped
        if self.conn.mode is Mode.RAW:
            window = self._raw_window()
            if window is None:
                return  # the window is being settled; these bytes are not taken
            self.conn.raw_received(nbytes)
            window.received(nbytes)
            # (Pooled writes yield at every trip to the pool, and their backpressure owns
            # pausing and resuming: only inline writes need the budget.)
            if window.inline and window.remaining and self.hub.count_read(nbytes):
                self.flow.pause_reading(YIELD)
                self._loop.call_soon(self.flow.resume_reading, YIELD)
            return
        self.conn.receive_data(self.hub.scratch[:nbytes])
        if self._packet_started is None:
            self._packet_started = self._last_activity
        shared = self.hub.shared
        if self._count_input() and shared.input_bytes > shared.input_budget:
            log.warning("%s: the input budget is spent; closing", self.client)
            self._abort(Status.UNAVAILABLE, "server busy: too much input waiting, try again")
            return
        if self.conn.pending_input > self.hub.max_pending_input:
            self.flow.pause_reading(INPUT)  # the pump resumes reading once it has caught up
        self._wake()

    def data_received(self, data: bytes | bytearray | memoryview) -> int:
        """For transports that are handed their input: copied through ``get_buffer``.
        Returns how many bytes were taken; the transport offers the rest again once
        reading is resumed (storage was behind)."""
        view = memoryview(data).cast("B")
        taken = 0
        while taken < len(view) and not self._closing:
            target = self.get_buffer()
            n = min(len(target), len(view) - taken)
            if not n:
                break
            target[:n] = view[taken : taken + n]
            self.buffer_updated(n)
            taken += n
            if self.flow.reading_paused and self.conn.mode is Mode.RAW:
                break  # the window asked for a pause: storage is behind
        return len(view) if self._closing else taken

    def eof_received(self) -> None:
        """The client will send nothing more, but may still read: what it sent is answered
        (a completion included) before the connection closes."""
        self.conn.receive_data(b"")
        window = self._raw_window()
        if window is not None:
            window.stop(Status.BAD_REQUEST, "the client closed its side within a raw window")
        self._wake()

    def _count_input(self) -> int:
        """Bring this connection's share of the input budget up to date; returns it."""
        pending = 0 if self._closing else self.conn.pending_input
        self.hub.shared.input_bytes += pending - self._input_counted
        self._input_counted = pending
        return pending

    def connection_lost(self) -> None:
        if self in self.hub.connections:
            metrics.connection_closed(self.hub.transport)
        self.hub.forget(self)
        self._closing = True
        self._count_input()
        if self._admitted:
            self._admitted = False
            self.hub.shared.release(self.client)
        self.flow.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.flow.resume_writing()
        if self._window is not None:
            self._window.client_gone()
        self._stop_feed()
        if self._download is not None:
            self._download.cancel()

    # ---- timeouts ----------------------------------------------------------------------
    def _arm_timer(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, self._check_timeout)

    def _check_timeout(self) -> None:
        if self._closing:
            return
        settings = self.settings
        raw = self.conn.mode is Mode.RAW
        limit = settings.raw_stall_timeout if raw else settings.idle_timeout
        # Outside raw mode a running pump means a handler or a negotiation is at work.
        if not raw and self._pump is not None and not self._pump.done():
            self._arm_timer(limit)
            return
        now = time.monotonic()
        deadline = self._last_activity + limit
        started = None if raw else self._packet_started
        if started is not None:
            deadline = min(deadline, started + settings.packet_timeout)
        if now < deadline:
            # Outside raw mode, look again within a packet timeout: a packet may start.
            wait = deadline - now if raw else min(deadline - now, settings.packet_timeout)
            self._arm_timer(max(0.05, wait))
            return
        if raw:
            if self._window is not None:
                self._window.stop(Status.TIMEOUT, f"no raw bytes for {limit:g} s")
        elif started is not None and now - started >= settings.packet_timeout:
            log.info("%s: packet not whole after %.0f s, closing", self.client, now - started)
            self._abort(Status.TIMEOUT, f"packet not whole within {settings.packet_timeout:g} s")
        else:
            log.info("%s: idle for %.0f s, closing", self.client, now - self._last_activity)
            self._abort(Status.TIMEOUT, f"idle for {limit:g} s")
        self._arm_timer(limit)

    # ---- packet mode -------------------------------------------------------------------
    def _wake(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = self._loop.create_task(self._run_pump())

    async def _run_pump(self) -> None:
        """Answer events in order; nothing unexpected may end it silently: it is logged with
        its traceback, the client gets ``500`` and the connection closes (a window in
        progress is settled at its durable offset)."""
        try:
            await self._answer_events()
        except Exception:
            log.exception("%s: unexpected error; closing the connection", self.client)
            self._abort(Status.SERVER_ERROR, "internal error")
        finally:
            self._flush_replies()

    async def _answer_events(self) -> None:
        conn = self.conn
        while not self._closing:
            try:
                event = conn.next_event()
                if event is not NEED_DATA and event is not PAUSED:
                    # A packet is in: the deadline of the next runs from its first byte.
                    self._packet_started = None if conn.between_packets else time.monotonic()
                    self._count_input()
            except RemoteProtocolError as exc:
                log.info("%s: protocol error %d: %s", self.client, int(exc.status), exc.message)
                self._abort(exc.status, exc.message)
                return
            if event is NEED_DATA and self.engine.shutting_down:
                self._abort(Status.UNAVAILABLE, "server shutting down")
                return
            if event is NEED_DATA or event is PAUSED:
                if event is NEED_DATA:
                    self.flow.resume_reading(INPUT)
                return
            if isinstance(event, ConnectionClosed):
                self._close()
                return
            if not self.flow.writable:
                self._flush_replies()
                await self.flow.drain()
            if isinstance(event, Request):
                response = await self.engine.handle_request(event)
                if response.feed is not None and not await self._open_feed(response.feed):
                    response = Response(Status.UNAVAILABLE, message="notifications unavailable")
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
                if response.feed is not None:
                    self._flush_replies()
                    self._start_feed(response.feed)
            elif isinstance(event, InvalidRequest):
                self._queue_reply(conn.respond(event, event.status, message=event.message))
            elif isinstance(event, StreamRequest):
                self._flush_replies()
                await self._stream(event)
            elif isinstance(event, PullRequest):
                self._flush_replies()
                await self._pull(event)
            else:  # pragma: no cover - WindowReceived: raw mode counts its own bytes
                raise AssertionError(f"unexpected event {event!r}")

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
        if not self._closing:
            self.channel.write(data)

    def _abort(self, status: Status, message: str) -> None:
        self._flush_replies()
        self._write(self.conn.abort(status, message))
        self._close()

    def _close(self) -> None:
        self._stop_feed()
        self._closing = True
        self._count_input()
        self.flow.closed = True
        self.channel.close()

    def _close_after_last_packet(self) -> None:
        self.flow.resume_all()  # what still arrives is read and dropped
        self._closing = self._draining = True
        self._count_input()
        self.flow.closed = True
        self.channel.close_after_last_packet()

    def shut_down(self) -> None:
        """Server shutdown: end a window with 503, close an idle connection."""
        if self._window is not None:
            self._window.stop(Status.UNAVAILABLE, "server shutting down")
        elif self._download is not None:
            self._download.cancel()  # the client resumes from what it received
        elif self._pump is None or self._pump.done():
            self._abort(Status.UNAVAILABLE, "server shutting down")

    # ---- notifications -----------------------------------------------------------------
    def _start_feed(self, feed: NotificationFeed) -> None:
        """Push ``feed``'s notifications on this connection from now on (a second monitor
        request replaces the first feed)."""
        self._stop_feed()
        if self._closing:
            self._loop.create_task(self._close_feed(feed))
            return
        self._feed = feed
        self._feed_task = self._loop.create_task(self._run_feed(feed))

    def _stop_feed(self) -> None:
        if self._feed_task is not None:
            self._feed_task.cancel()
            self._feed_task = None
            self._feed = None

    async def _open_feed(self, feed: NotificationFeed) -> bool:
        """Open the feed before the reply leaves: once the client has the reply, the
        monitor is in place (its principal online, its notifications on their way)."""
        try:
            await feed.open()
        except Exception:
            log.exception("%s: a notification feed did not open", self.client)
            await self._close_feed(feed)
            return False
        return True

    async def _run_feed(self, feed: NotificationFeed) -> None:
        try:
            while not self._closing:
                batch = await feed.next_batch()
                for notification in batch:
                    payload = json.dumps(notification.payload, separators=(",", ":")).encode()
                    self._write(
                        self.conn.notify(
                            notification.kind, notification.id, payload, notification.sender
                        )
                    )
                if self.conn.notifications_held:
                    # A stream is under way: the next batch waits until these have left.
                    self._held_sent.clear()
                    await self._held_sent.wait()
                if not self.flow.writable:
                    await self.flow.drain()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("%s: notification feed failed; closing the connection", self.client)
            self._abort(Status.SERVER_ERROR, "notification feed failed")
        finally:
            await asyncio.shield(self._close_feed(feed))

    async def _close_feed(self, feed: NotificationFeed) -> None:
        try:
            await feed.close()
        except Exception:
            log.exception("%s: closing a notification feed failed", self.client)

    def _write_held_notifications(self) -> None:
        self._write(self.conn.take_notifications())
        if not self.conn.notifications_held:
            self._held_sent.set()

    # ---- streams -----------------------------------------------------------------------
    async def _stream(self, request: StreamRequest) -> None:
        outcome = await self.engine.open_stream(request, self.client)
        if isinstance(outcome, Refused):
            self._write(self.conn.refuse_stream(outcome.status, outcome.message))
            self._write_held_notifications()
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
        window = self._window = self.engine.receive(
            outcome, self.flow, transport=self.hub.transport
        )
        self._last_activity = time.monotonic()
        self._arm_timer(self.settings.raw_stall_timeout)
        try:
            early = self.conn.take_early_raw()
            if early:
                # The client sent raw bytes before our accept reply (PROTOCOL §6): they are
                # the start of the window, whatever their size, stored before any later byte.
                self.flow.pause_reading(_EARLY)
                self.conn.raw_received(len(early))
                await window.write(early)
                self.flow.resume_reading(_EARLY)
            completion = await window.result()
        except BaseException:
            window.client_gone()  # whatever happened, the window settles at its durable offset
            raise
        finally:
            self._window = None
        if completion is not None:
            self._send_completion(completion)
            if self.conn.mode is Mode.CLOSED:
                self._close_after_last_packet()
        self.flow.resume_all()
        self._last_activity = time.monotonic()
        self._packet_started = None if self.conn.between_packets else self._last_activity
        self._arm_timer(min(self.settings.idle_timeout, self.settings.packet_timeout))

    # ---- pulls -------------------------------------------------------------------------
    async def _pull(self, request: PullRequest) -> None:
        outcome = await self.engine.open_download(request, self.client)
        if isinstance(outcome, Refused):
            self._write(self.conn.refuse_pull(outcome.status, outcome.message))
            self._write_held_notifications()
            return
        download = self._download = outcome
        try:
            if self._closing:
                return
            self._write(
                self.conn.accept_pull(
                    key=download.key,
                    total=download.total,
                    buffer_size=download.buffer_size,
                    checksum=download.checksum,
                )
            )
            await self._send_content(download)
            self._write_held_notifications()  # held while the raw bytes went out
        finally:
            self._download = None
            download.close()
        self._last_activity = time.monotonic()
        self._arm_timer(min(self.settings.idle_timeout, self.settings.packet_timeout))

    async def _send_content(self, download: Download) -> None:
        """Write the content's bytes as the transport takes them. A failure (the content
        vanished, storage failed, shutdown, a client that stops reading) can only end the
        connection: the client is reading raw bytes and resumes from what it has."""
        conn = self.conn
        size = max(_SEND_CHUNK, download.buffer_size)
        stall = self.settings.raw_stall_timeout
        try:
            while conn.send_remaining and not self._closing:
                if not self.flow.writable:
                    async with asyncio.timeout(stall):
                        await self.flow.drain()
                    if self._closing:
                        return
                chunk = await download.read(min(size, conn.send_remaining))
                if self._closing:
                    return
                if not chunk:
                    raise DownloadFailed("the content ended early")
                conn.raw_sent(len(chunk))
                self._write(chunk)
                self._last_activity = time.monotonic()
        except (DownloadFailed, TimeoutError) as exc:
            if self._closing:
                return
            reason = (
                f"client read nothing for {stall:g} s" if isinstance(exc, TimeoutError) else exc
            )
            log.info("%s: download of %s ended: %s", self.client, download.key, reason)
            conn.fail_sending()
            self._close()

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
        self._write_held_notifications()
