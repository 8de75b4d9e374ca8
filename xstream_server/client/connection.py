"""One client connection: packets out, packets in, raw-byte windows (PROTOCOL §1–§3) and
pulls (§5).

Framing is the protocol core's (``encode_packet``, ``PacketDecoder``); this module adds the
asyncio plumbing. A background task reads packets and hands each to the oldest caller still
waiting — the server answers in request order, so concurrent ``request`` calls pipeline.

A stream takes the connection for itself: ``negotiate`` waits until no ordinary request is
in flight, and nothing else may be sent until the window's completion packet is in. A pull
does too: after its accept reply the reader task hands the next ``T − O`` bytes to
``read_content`` instead of the packet decoder, holding at most a few MiB (it stops reading
the socket while the consumer is behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO, Final, Literal

from ..app import Notification
from ..protocol import Limits, Packet, PacketDecoder, RemoteProtocolError, encode_packet
from ..utp.socket import open_utp_connection
from .errors import ClientError, ServerProtocolError, error_for_status

__all__ = [
    "DEFAULT_PORT",
    "ClientConnection",
    "ClientResponse",
    "ConnectionLostError",
    "PullGrant",
    "StreamGrant",
    "Transport",
    "connect",
    "parse_address",
]

DEFAULT_PORT: Final = 7070
Transport = Literal["tcp", "utp"]
# Replies of routes may be larger than the server's own default request limit.
_CLIENT_LIMITS: Final = Limits(max_header_block=64 * 1024, max_headers=256, max_payload=1 << 30)
_READ_SIZE: Final = 256 * 1024
# The sendfile path reports progress once per span; spans adapt to take about this long.
_SPAN_SECONDS: Final = 0.1
_SPAN_MIN: Final = 256 * 1024
_SPAN_MAX: Final = 32 * 1024 * 1024
_MISSING: Final[Any] = object()
# Raw content the reader task holds for ``read_content`` before it stops reading.
_CONTENT_BUFFER: Final = 4 * 1024 * 1024


class ConnectionLostError(ClientError, ConnectionError):
    """The connection closed (or was never usable) while something was still due."""


def parse_address(address: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` → (host, port)."""
    host, port_text = address, ""
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise ValueError(f"bad server address {address!r}")
        host, rest = address[1:end], address[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad server address {address!r}")
            port_text = rest[1:]
    elif address.count(":") == 1:
        host, port_text = address.split(":")
    if not host:
        raise ValueError(f"bad server address {address!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in server address {address!r}")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class ClientResponse:
    """A packet from the server. ``content`` decodes the payload by its ``data-format``."""

    status: int
    headers: Mapping[str, str]
    payload: bytes

    @property
    def id(self) -> str | None:
        return self.headers.get("id")

    @property
    def data_format(self) -> str:
        return self.headers.get("data-format", "bytes")

    @property
    def message(self) -> str | None:
        return self.headers.get("message")

    def json(self) -> Any:
        return jsonlib.loads(self.payload)

    def text(self) -> str:
        return self.payload.decode("utf-8")

    @property
    def content(self) -> Any:
        """``bytes``, ``str`` or the decoded JSON value, following ``data-format``."""
        if self.data_format == "json":
            return self.json() if self.payload else None
        if self.data_format == "text":
            return self.text()
        return self.payload

    def raise_for_status(self) -> None:
        if self.status != 0:
            raise error_for_status(self.status, self.message or "(no message)")

    @classmethod
    def from_packet(cls, packet: Packet) -> ClientResponse:
        raw = packet.headers.get("status")
        if raw is None or not raw.isdigit():
            raise ServerProtocolError(f"response without a valid status header: {raw!r}")
        return cls(int(raw), packet.headers, packet.payload)


@dataclass(frozen=True, slots=True)
class StreamGrant:
    """The server's accept reply (§3.1): send ``window`` raw bytes starting at ``offset``."""

    key: str
    offset: int
    window: int
    buffer_size: int
    total: int
    response: ClientResponse

    @property
    def partial(self) -> bool:
        return self.offset + self.window < self.total


@dataclass(frozen=True, slots=True)
class PullGrant:
    """The server's accept reply to a pull (§5): ``total − offset`` raw bytes follow;
    ``checksum`` is the content's sha256 hex digest when the server knows it."""

    key: str
    total: int
    offset: int
    buffer_size: int
    checksum: str | None
    response: ClientResponse

    @property
    def size(self) -> int:
        """Bytes that follow the reply."""
        return self.total - self.offset


class ClientConnection:
    """A packet connection to an x-stream server. Create it with ``connect``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = PacketDecoder(_CLIENT_LIMITS)
        self._waiting: deque[asyncio.Future[Packet]] = deque()
        self._unclaimed: deque[Packet] = deque()
        self._lost: ClientError | None = None
        self._streaming = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._use_sendfile = True
        # No write may wait longer than this for the peer to take bytes (None: no limit).
        self.stall_timeout: float | None = None
        self._completion: asyncio.Future[Packet] | None = None
        # Pulls: the reply that switches the reader to raw content, and that content.
        self._pull_reply: asyncio.Future[Packet] | None = None
        self._raw_due = 0  # content bytes the reader still has to take off the socket
        self._content_left = 0  # content bytes read_content has still to hand out
        self._content: deque[bytes] = deque()
        self._content_buffered = 0
        self._content_ready = asyncio.Event()
        self._content_room = asyncio.Event()
        self._content_room.set()
        # Notification packets (PROTOCOL §8) the server pushed, not yet taken.
        self._notifications: deque[Notification] = deque()
        self._notified = asyncio.Event()
        self._reader_task = asyncio.create_task(self._read_packets())

    @classmethod
    async def open(
        cls,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        connect_timeout: float | None = 10.0,
        transport: Transport = "tcp",
    ) -> ClientConnection:
        """``transport``: ``"tcp"``, or ``"utp"`` (``port`` is then the server's UDP port)."""
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await _open_streams(transport, host, port)
        except TimeoutError:
            raise ConnectionLostError(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise ConnectionLostError(f"cannot connect to {host}:{port}: {exc}") from exc
        return cls(reader, writer)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._lost is None

    @property
    def streaming(self) -> bool:
        """A stream was negotiated and its completion packet is not in yet."""
        return self._streaming

    async def close(self, timeout: float = 10.0) -> None:
        """Wait for every reply still due, then close the connection cleanly (aborting it
        if that takes longer than ``timeout`` seconds)."""
        try:
            async with asyncio.timeout(timeout):
                if self._lost is None:
                    await self._idle.wait()
                self._shut(ConnectionLostError("connection closed by the client"))
                self._writer.close()
                with contextlib.suppress(OSError):
                    await self._writer.wait_closed()
        except TimeoutError:
            self.abort()
        await self._stop_reader()

    def abort(self) -> None:
        """Drop the connection at once; whatever is in flight fails with ConnectionLostError."""
        self._shut(ConnectionLostError("connection aborted by the client"))
        self._writer.transport.abort()
        self._reader_task.cancel()

    async def __aenter__(self) -> ClientConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.close()
        else:
            self.abort()
            await self._stop_reader()

    async def _stop_reader(self) -> None:
        self._reader_task.cancel()
        try:
            await self._reader_task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    # -- ordinary requests -----------------------------------------------------------------

    async def request(
        self,
        route: str,
        data: bytes = b"",
        *,
        json: Any = _MISSING,
        text: str | None = None,
        id: str | None = None,
        metadata: Mapping[str, str | int] | None = None,
        authorization: str | None = None,
        check: bool = True,
    ) -> ClientResponse:
        """Send one request and return its response.

        The payload is ``data`` (``data-format: bytes``), or ``json=`` any JSON value, or
        ``text=``. ``metadata`` becomes extra headers for the route. Concurrent calls are
        pipelined. With ``check`` (the default) a non-zero status raises the matching
        ``XStreamError``.
        """
        if self._streaming:
            raise RuntimeError("the connection is carrying a stream; open another one")
        headers: dict[str, str | int] = dict(metadata or {})
        if json is not _MISSING:
            if data or text is not None:
                raise TypeError("give one of data, json= or text=")
            payload = jsonlib.dumps(json, separators=(",", ":")).encode()
            headers["data-format"] = "json"
        elif text is not None:
            if data:
                raise TypeError("give one of data, json= or text=")
            payload = text.encode()
            headers["data-format"] = "text"
        else:
            payload = bytes(data)
            headers["data-format"] = "bytes"
        headers["route"] = route
        if id is not None:
            headers["id"] = id
        if authorization is not None:
            headers["authorization"] = authorization
        response = await self._exchange(headers, payload, id)
        if check:
            response.raise_for_status()
        return response

    async def _exchange(
        self, headers: Mapping[str, str | int], payload: bytes, request_id: str | None
    ) -> ClientResponse:
        packet = encode_packet(headers, payload)  # ValueError for bad headers: before sending
        waiter = self._expect()
        self._writer.write(packet)
        self._idle.clear()
        try:
            await self._drain()
            response = ClientResponse.from_packet(await waiter)
        finally:
            if not self._waiting:
                self._idle.set()
        if request_id is not None and response.id != request_id:
            raise ServerProtocolError(f"reply to id {request_id!r} carries id {response.id!r}")
        return response

    # -- streams (used by Upload) ----------------------------------------------------------

    async def negotiate(
        self,
        route: str,
        total: int,
        buffer_size: int,
        *,
        key: str | None = None,
        checksum: str | None = None,
        metadata: Mapping[str, str | int] | None = None,
        authorization: str | None = None,
    ) -> StreamGrant:
        """Send a stream request (§3.1/§3.4). Refusals raise their ``XStreamError``.

        After a grant the caller MUST send exactly ``grant.window`` raw bytes and then
        ``await completion()``.
        """
        await self._idle.wait()
        if self._streaming:
            raise RuntimeError("a stream is already in progress on this connection")
        headers: dict[str, str | int] = dict(metadata or {})
        headers.update(
            {"route": route, "data-format": "bytes", "x-stream": f"{total}:{buffer_size}"}
        )
        if key is not None:
            headers["x-stream-key"] = key
        if checksum is not None:
            headers["x-stream-checksum"] = f"sha256:{checksum}"
        if authorization is not None:
            headers["authorization"] = authorization
        self._streaming = True
        try:
            response = await self._exchange(headers, b"", None)
            response.raise_for_status()
            grant = _parse_grant(response, total, key)
        except BaseException:
            self._streaming = False
            raise
        # The completion packet may already be here (W = 0) or arrive any moment: claim it
        # now so it is never taken for an unsolicited packet.
        self._completion = self._expect()
        return grant

    async def completion(self, reply_timeout: float | None) -> ClientResponse:
        """The packet that ends the granted window (§3.3), as it came."""
        if self._completion is None:
            raise RuntimeError("no stream was negotiated")
        try:
            async with asyncio.timeout(reply_timeout):
                return ClientResponse.from_packet(await self._completion)
        except TimeoutError:
            self.abort()
            raise ConnectionLostError("no completion packet from the server in time") from None
        finally:
            self._completion = None
            self._streaming = False

    # -- pulls (used by Download) ----------------------------------------------------------

    async def pull(
        self,
        route: str,
        *,
        key: str | None = None,
        offset: int = 0,
        buffer_size: int = 1024 * 1024,
        metadata: Mapping[str, str | int] | None = None,
        authorization: str | None = None,
    ) -> PullGrant:
        """Send a pull (``x-stream-pull: O:B``, §5). Refusals raise their ``XStreamError``.

        After a grant the caller MUST take ``grant.size`` bytes with ``read_content``
        before anything else is sent on this connection.
        """
        await self._idle.wait()
        if self._streaming:
            raise RuntimeError("a stream is already in progress on this connection")
        headers: dict[str, str | int] = dict(metadata or {})
        headers.update({"route": route, "x-stream-pull": f"{offset}:{buffer_size}"})
        if key is not None:
            headers["x-stream-key"] = key
        if authorization is not None:
            headers["authorization"] = authorization
        packet = encode_packet(headers)
        self._streaming = True
        try:
            waiter = self._pull_reply = self._expect()
            self._writer.write(packet)
            self._idle.clear()
            try:
                await self._drain()
                response = ClientResponse.from_packet(await waiter)
            finally:
                if not self._waiting:
                    self._idle.set()
            response.raise_for_status()
            grant = _parse_pull_grant(response, offset)
        except BaseException:
            self._streaming = False
            raise
        self._content_left = grant.size
        if not grant.size:
            self._streaming = False
        return grant

    async def read_content(self) -> bytes:
        """The next piece of the granted pull's content; ``b""`` once all of it is read.
        Raises ``ConnectionLostError`` (after every byte that did arrive) when the
        connection ends first."""
        while not self._content:
            if not self._content_left:
                self._streaming = False
                return b""
            if self._lost is not None:
                raise self._lost
            self._content_ready.clear()
            await self._content_ready.wait()
        chunk = self._content.popleft()
        self._content_buffered -= len(chunk)
        self._content_left -= len(chunk)
        if self._content_buffered <= _CONTENT_BUFFER:
            self._content_room.set()
        if not self._content_left:
            self._streaming = False
        return chunk

    async def _take_content(self, data: bytes) -> None:
        """Raw content off the socket (the reader task): handed to ``read_content``; the
        reader waits while too much is held."""
        self._content.append(data)
        self._content_buffered += len(data)
        self._raw_due -= len(data)
        self._content_ready.set()
        if self._content_buffered > _CONTENT_BUFFER:
            self._content_room.clear()
            await self._content_room.wait()

    async def send_raw(self, data: bytes | bytearray | memoryview) -> None:
        """Write raw window bytes, waiting while the transport's buffer is full."""
        self._check_open()
        self._writer.write(data)
        await self._drain()

    async def send_file(
        self, file: BinaryIO, offset: int, count: int, sent: Callable[[int], None]
    ) -> None:
        """Send ``count`` bytes of ``file`` from ``offset`` — with ``loop.sendfile`` where
        the event loop and transport support it, else by reading blocks in a worker
        thread while the previous block is being written. ``sent`` is told each step."""
        end = offset + count
        loop = asyncio.get_running_loop()
        span = _SPAN_MIN
        while self._use_sendfile and offset < end:
            self._check_open()
            span = min(span, end - offset)
            started = loop.time()
            try:
                async with asyncio.timeout(self.stall_timeout):
                    await loop.sendfile(self._writer.transport, file, offset, span, fallback=False)
            except TimeoutError:
                self.abort()
                raise ConnectionLostError(f"sending stalled for {self.stall_timeout} s") from None
            except OSError as exc:
                raise ConnectionLostError(f"connection lost while sending: {exc}") from exc
            except (NotImplementedError, asyncio.SendfileNotAvailableError, RuntimeError):
                self._check_open()  # a closing transport is a lost connection, not a mode
                self._use_sendfile = False
                break
            offset += span
            sent(span)
            elapsed = max(loop.time() - started, 1e-6)
            span = int(min(max(span * _SPAN_SECONDS / elapsed, _SPAN_MIN), _SPAN_MAX, 4 * span))
        if offset < end:
            await self._send_file_by_blocks(file.fileno(), offset, end, sent)

    async def _send_file_by_blocks(
        self, fd: int, offset: int, end: int, sent: Callable[[int], None]
    ) -> None:
        block = 1024 * 1024
        loop = asyncio.get_running_loop()
        self._writer.transport.set_write_buffer_limits(high=4 * block)

        def read_at(position: int) -> asyncio.Future[bytes]:
            return loop.run_in_executor(None, os.pread, fd, min(block, end - position), position)

        upcoming = read_at(offset)
        try:
            while offset < end:
                data = await upcoming
                if not data:
                    raise ClientError(f"file ended at {offset} bytes, {end} expected")
                offset += len(data)
                if offset < end:
                    upcoming = read_at(offset)  # read ahead while this block drains
                await self.send_raw(data)
                sent(len(data))
        finally:
            upcoming.cancel()

    # -- plumbing --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._lost is not None:
            raise self._lost
        if self._writer.transport.is_closing():
            raise ConnectionLostError("connection closed")

    async def _drain(self) -> None:
        try:
            async with asyncio.timeout(self.stall_timeout):
                await self._writer.drain()
        except TimeoutError:
            self.abort()
            raise ConnectionLostError(f"sending stalled for {self.stall_timeout} s") from None
        except (ConnectionError, OSError) as exc:
            raise ConnectionLostError(f"connection lost while sending: {exc}") from exc

    def _expect(self) -> asyncio.Future[Packet]:
        self._check_open()
        waiter: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        if self._unclaimed:
            waiter.set_result(self._unclaimed.popleft())
        else:
            self._waiting.append(waiter)
        return waiter

    # -- notifications (PROTOCOL §8) -------------------------------------------------------

    async def next_notification(self) -> Notification:
        """The next notification the server pushed (after a ``/monitor`` request); raises
        ``ConnectionLostError`` once the connection is gone and none is left."""
        while not self._notifications:
            if self._lost is not None:
                raise self._lost
            self._notified.clear()
            await self._notified.wait()
        return self._notifications.popleft()

    async def notifications(self) -> AsyncIterator[Notification]:
        """Notifications as they come, until the connection ends."""
        while True:
            try:
                yield await self.next_notification()
            except ConnectionLostError:
                return

    def _deliver(self, packet: Packet) -> None:
        headers = packet.headers
        if "status" not in headers and "notification" in headers:
            # Pushed by the server (never inside a response or raw bytes): not a reply.
            self._notifications.append(_notification_of(packet))
            self._notified.set()
            return
        if self._waiting:
            waiter = self._waiting.popleft()
            if waiter is self._pull_reply:
                # The bytes after an accepted pull's reply are its content, not packets.
                self._pull_reply = None
                if packet.headers.get("status") == "0":
                    try:
                        self._raw_due = _pull_content_size(packet)
                    except ServerProtocolError as exc:
                        if not waiter.done():
                            waiter.set_exception(exc)
                        raise
            # A cancelled caller still owned this reply; it is dropped with it.
            if not waiter.done():
                waiter.set_result(packet)
            return
        if self._unclaimed:
            raise ServerProtocolError("the server sent packets nobody asked for")
        # Only a completion packet can get here, a moment before ``negotiate`` claims it.
        self._unclaimed.append(packet)

    def _shut(self, reason: ClientError) -> None:
        if self._lost is None:
            self._lost = reason
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(self._lost)
                waiter.exception()  # retrieved here: a caller may be gone already
        self._idle.set()
        self._notified.set()
        self._content_ready.set()

    async def _read_packets(self) -> None:
        reason: ClientError = ConnectionLostError("connection closed by the server")
        try:
            while True:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    break
                while data:
                    if self._raw_due:
                        piece, data = data[: self._raw_due], data[self._raw_due :]
                        await self._take_content(piece)
                        continue
                    self._decoder.receive_data(data)
                    data = b""
                    while (packet := self._decoder.next_packet()) is not None:
                        self._deliver(packet)
                        if self._raw_due:  # a pull was accepted: what follows is content
                            data = self._decoder.take_buffered()
                            break
        except RemoteProtocolError as exc:
            reason = ServerProtocolError(f"malformed packet from the server: {exc.message}")
            self._writer.transport.abort()
        except ServerProtocolError as exc:
            reason = exc
            self._writer.transport.abort()
        except (ConnectionError, OSError) as exc:
            reason = ConnectionLostError(f"connection lost: {exc}")
        finally:
            self._shut(reason)


def _notification_of(packet: Packet) -> Notification:
    headers = packet.headers
    try:
        payload = jsonlib.loads(packet.payload) if packet.payload else None
        return Notification(
            headers["notification-id"], headers["notification"], payload, headers.get("from")
        )
    except (KeyError, ValueError) as exc:
        raise ServerProtocolError(f"malformed notification {dict(headers)!r}") from exc


def _parse_grant(response: ClientResponse, total: int, key: str | None) -> StreamGrant:
    headers = response.headers
    try:
        capacity_text, _, b2_text = headers["x-stream"].partition(":")
        capacity, buffer_size = int(capacity_text), int(b2_text)
        granted_key = headers["x-stream-key"]
        offset = int(headers["x-stream-offset"])
    except (KeyError, ValueError) as exc:
        raise ServerProtocolError(f"malformed accept reply {dict(headers)!r}") from exc
    remaining = total - offset
    if not 0 <= offset <= total or buffer_size < 1 or not 0 <= capacity <= max(remaining - 1, 0):
        raise ServerProtocolError(
            f"accept reply out of range: x-stream {headers['x-stream']}, offset {offset}, "
            f"total {total}"
        )
    if key is not None and granted_key != key:
        raise ServerProtocolError(f"resumed {key!r}, the server answered for {granted_key!r}")
    window = remaining if capacity == 0 else capacity
    return StreamGrant(granted_key, offset, window, buffer_size, total, response)


def _pull_content_size(packet: Packet) -> int:
    """``T − O`` of an accepted pull's reply; ServerProtocolError when malformed."""
    headers = packet.headers
    try:
        total = int(headers["x-stream"].partition(":")[0])
        offset = int(headers["x-stream-offset"])
    except (KeyError, ValueError) as exc:
        raise ServerProtocolError(f"malformed pull reply {dict(headers)!r}") from exc
    if not 0 <= offset <= total:
        raise ServerProtocolError(f"pull reply out of range: offset {offset}, total {total}")
    return total - offset


def _parse_pull_grant(response: ClientResponse, offset: int) -> PullGrant:
    headers = response.headers
    try:
        total_text, _, b2_text = headers["x-stream"].partition(":")
        total, buffer_size = int(total_text), int(b2_text)
        key = headers["x-stream-key"]
        granted_offset = int(headers["x-stream-offset"])
    except (KeyError, ValueError) as exc:
        raise ServerProtocolError(f"malformed pull reply {dict(headers)!r}") from exc
    if granted_offset != offset:
        raise ServerProtocolError(f"pulled from {offset}, the server sends from {granted_offset}")
    checksum = None
    announced = headers.get("x-stream-checksum")
    if announced is not None:
        algorithm, _, digest = announced.partition(":")
        if algorithm != "sha256" or len(digest) != 64:
            raise ServerProtocolError(f"malformed x-stream-checksum {announced!r}")
        checksum = digest.lower()
    return PullGrant(key, total, granted_offset, buffer_size, checksum, response)


async def _open_streams(
    transport: Transport, host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The one place a transport is chosen: any byte stream carries the packet protocol."""
    if transport == "utp":
        return await open_utp_connection(host, port, limit=_READ_SIZE)
    if transport != "tcp":
        raise ValueError(f"unknown transport {transport!r}: tcp or utp")
    return await asyncio.open_connection(host, port, limit=_READ_SIZE)


class _Connecting:
    """What ``connect`` returns: await it, or use it with ``async with``."""

    def __init__(self, host: str, port: int, timeout: float | None, transport: Transport) -> None:
        self._args = (host, port, timeout, transport)
        self._connection: ClientConnection | None = None

    def __await__(self) -> Generator[Any, None, ClientConnection]:
        host, port, timeout, transport = self._args
        return ClientConnection.open(
            host, port, connect_timeout=timeout, transport=transport
        ).__await__()

    async def __aenter__(self) -> ClientConnection:
        self._connection = await self
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._connection is not None
        await self._connection.__aexit__(exc_type, exc, tb)


def connect(
    server: str = f"127.0.0.1:{DEFAULT_PORT}",
    *,
    timeout: float | None = 10.0,
    transport: Transport = "tcp",
) -> _Connecting:
    """Open a connection to ``server`` (``host:port``)::

    async with connect("127.0.0.1:7070") as conn:
        reply = await conn.request("/echo", json={"hello": 1})
    """
    host, port = parse_address(server)
    return _Connecting(host, port, timeout, transport)
