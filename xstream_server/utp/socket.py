"""The asyncio side of uTP: one UDP socket (an ``asyncio.DatagramProtocol``) carrying many
connections, each exposed as an ``asyncio.Transport`` to an ordinary asyncio protocol.

* ``UtpServer.listen(host, port, protocol_factory)``: accepts connections.
* ``UtpClient(max_connections=5).connect(host, port, protocol_factory)``: many connections
  over one UDP socket.
* ``open_utp_connection(host, port)``: an asyncio ``(StreamReader, StreamWriter)`` pair.

Writes made in one event-loop iteration are coalesced: a connection is flushed once per
iteration (``call_soon``), so they leave in as few full packets as the window allows, and
the acks for a burst of datagrams go out as one. Reading honours ``pause_reading``: bytes
stay in the connection's receive buffer and the advertised window shrinks, so a slow
reader slows the sender. Timers are ``loop.call_at`` handles on the core's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable
from typing import Any, Final, TypeVar

from .connection import ConnectionState, UtpConnection, UtpSettings
from .packets import SEQ_MASK, Packet, PacketError, PacketType, decode_packet

__all__ = ["UtpClient", "UtpEndpoint", "UtpError", "UtpServer", "UtpStream", "open_utp_connection"]

log = logging.getLogger("xstream.utp")

Address = tuple[str, int]
P = TypeVar("P", bound=asyncio.BaseProtocol)

DEFAULT_MAX_CONNECTIONS: Final = 5
_HIGH_WATER: Final = 1024 * 1024
_SOCKET_BUFFER: Final = 4 * 1024 * 1024
_READ_CHUNK: Final = 256 * 1024
_ACK_EVERY: Final = 8  # DATA packets between acks within one burst of datagrams


class UtpError(ConnectionError):
    pass


class UtpStream(asyncio.Transport):
    """One uTP connection as an asyncio transport."""

    def __init__(self, endpoint: UtpEndpoint, connection: UtpConnection, peer: Address) -> None:
        super().__init__()
        self._endpoint = endpoint
        self.connection = connection
        self.peer = peer
        self._protocol: asyncio.BaseProtocol | None = None
        self._loop = endpoint.loop
        self._reading_paused = False
        self._closed_for_reading = False  # close() or abort(): input is acked, not delivered
        self._closing = False
        self._eof_delivered = False
        self._lost = False
        self._writing_paused = False
        self._high_water = _HIGH_WATER
        self._low_water = _HIGH_WATER // 4
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.connected: asyncio.Future[None] = self._loop.create_future()
        self.protocol_ready = False  # connection_made was called
        self.outgoing = False  # we connected (else accepted)
        # False: close() is done (connection_lost) once the FIN is sent, as a TCP socket's
        # close is once the kernel has the bytes; the FIN's ack is then awaited in the
        # background (until ``close_timeout``), and ``UtpServer.close`` lingers for it.
        self.close_waits_for_ack = True

    def start(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self.protocol_ready = True
        protocol.connection_made(self)
        self._endpoint.touch(self)

    # ---- asyncio.Transport -----------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer
        if name == "sockname":
            return self._endpoint.sockname
        if name == "utp":
            return self.connection
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def is_reading(self) -> bool:
        return not self._reading_paused

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self._endpoint.touch(self)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._lost or self.connection.finished or not data:
            return  # as asyncio transports do, writes after the end are dropped
        self.connection.write(data)
        self._endpoint.touch(self)
        self._check_writing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """FIN after what is written; input is still delivered until the peer's FIN."""
        if not self._closing:
            self._closing = True
            self.connection.close(self._loop.time())
            self._endpoint.touch(self)

    def close(self) -> None:
        """FIN after what is written; done (``connection_lost``) once it is acknowledged."""
        self._closed_for_reading = True
        self.write_eof()

    def abort(self) -> None:
        """``destroy``: RESET, nothing more is sent or waited for."""
        self._closed_for_reading = self._closing = True
        self.connection.destroy(self._loop.time())
        self._endpoint.touch(self)

    def get_write_buffer_size(self) -> int:
        return self.connection.buffered_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_water, self._high_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high_water = _HIGH_WATER if high is None else high
        self._low_water = self._high_water // 4 if low is None else low
        self._check_writing()

    # ---- driven by the endpoint ------------------------------------------------------------
    def service(self) -> None:
        """After input, a timer or a write: hand over what was received, send what is due."""
        connection = self.connection
        self._deliver()
        now = self._loop.time()
        datagrams = connection.flush(now)
        if datagrams:
            self._endpoint.send(datagrams, self.peer)
        if not self.connected.done():
            if connection.finished:
                if self.outgoing:
                    self.connected.set_exception(UtpError(connection.error or "no connection"))
                else:
                    self.connected.cancel()  # a handshake that never completed
            elif self.outgoing and connection.state is not ConnectionState.SYN_SENT:
                self.connected.set_result(None)
        self._check_writing()
        self._arm_timer(connection.deadline)
        if self._lost:
            if connection.finished:
                self._endpoint.forget(self)
            return
        if connection.finished or (self._closed_for_reading and self._close_done()):
            self._lose()

    def _close_done(self) -> bool:
        connection = self.connection
        if self.close_waits_for_ack:
            return connection.fin_acked
        return connection.state is ConnectionState.FIN_SENT or connection.fin_acked

    def _deliver(self) -> None:
        protocol = self._protocol
        connection = self.connection
        if protocol is None or self._lost or not self.protocol_ready:
            return
        if self._closed_for_reading:
            connection.read()  # acked, and dropped
            return
        buffered = isinstance(protocol, asyncio.BufferedProtocol)
        while connection.readable and not self._reading_paused and not self._lost:
            if buffered:
                assert isinstance(protocol, asyncio.BufferedProtocol)
                target = memoryview(protocol.get_buffer(connection.readable))
                size = min(len(target), connection.readable)
                if not size:  # the reader has no room yet: look again next iteration
                    self._loop.call_soon(self._endpoint.touch, self)
                    return
                target[:size] = connection.read(size)
                protocol.buffer_updated(size)
            else:
                assert isinstance(protocol, asyncio.Protocol)
                protocol.data_received(connection.read(_READ_CHUNK))
        if connection.eof and not connection.readable and not self._eof_delivered:
            self._eof_delivered = True
            if not self._lost and not self._closed_for_reading:
                assert isinstance(protocol, asyncio.Protocol | asyncio.BufferedProtocol)
                if not protocol.eof_received():
                    self.close()

    def _check_writing(self) -> None:
        protocol = self._protocol
        if protocol is None or self._lost or not self.protocol_ready:
            return
        size = self.connection.buffered_bytes
        if not self._writing_paused and size > self._high_water:
            self._writing_paused = True
            protocol.pause_writing()
        elif self._writing_paused and size <= self._low_water:
            self._writing_paused = False
            protocol.resume_writing()

    def _arm_timer(self, deadline: float | None) -> None:
        if deadline == self._timer_at or self._endpoint.socket_closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self.connection.on_timer(self._loop.time())
        self._endpoint.touch(self)

    def _lose(self) -> None:
        self._lost = True
        connection = self.connection
        exc: Exception | None = None
        if connection.state is ConnectionState.RESET and connection.error != "destroyed":
            exc = UtpError(connection.error or "connection reset")
        if connection.finished:
            self._endpoint.forget(self)
        if self._writing_paused and self._protocol is not None:
            self._writing_paused = False
            self._protocol.resume_writing()
        if self._protocol is not None and self.protocol_ready:
            self._protocol.connection_lost(exc)

    def socket_gone(self) -> None:
        """The UDP socket closed under the connection: it ends here."""
        self.stop_timer()
        if not self.connected.done():
            if self.outgoing:
                self.connected.set_exception(UtpError("the UDP socket closed"))
            else:
                self.connected.cancel()
        if not self._lost:
            self._lost = True
            if self._protocol is not None and self.protocol_ready:
                self._protocol.connection_lost(UtpError("the UDP socket closed"))

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None


class UtpEndpoint(asyncio.DatagramProtocol):
    """The UDP socket: routes datagrams to connections by (peer address, connection id),
    accepts SYNs when listening, and flushes touched connections once per iteration."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: UtpSettings,
        max_connections: int | None,
        on_accept: Callable[[UtpStream], None] | None = None,
    ) -> None:
        self.loop = loop
        self.settings = settings
        self.max_connections = max_connections
        self._on_accept = on_accept
        self.streams: dict[tuple[Address, int], UtpStream] = {}
        self._touched: dict[UtpStream, None] = {}
        self._flush_scheduled = False
        self.transport: asyncio.DatagramTransport | None = None
        self.sockname: Address = ("", 0)
        self.junk = 0  # datagrams that were not uTP packets
        self.closed: asyncio.Future[None] = loop.create_future()
        self._empty = asyncio.Event()
        self._empty.set()
        self._rng = random.Random()
        self.close_when_empty = False  # a client's own socket: closed with its connection
        self.socket_closed = False

    # ---- asyncio.DatagramProtocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        name = transport.get_extra_info("sockname")
        self.sockname = (str(name[0]), int(name[1]))

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            packet = decode_packet(data)
        except PacketError:
            self.junk += 1
            return
        peer = addr if len(addr) == 2 else (addr[0], addr[1])
        stream = self.streams.get((peer, packet.connection_id))
        if stream is None and packet.type is PacketType.SYN and self._on_accept is not None:
            stream = self.streams.get((peer, (packet.connection_id + 1) & SEQ_MASK))
            if stream is None:
                self._accept(packet, peer)
                return
        if stream is None and packet.type is PacketType.RESET:
            stream = self._by_send_id(peer, packet.connection_id)
        if stream is None:
            self.junk += 1
            if packet.type not in (PacketType.RESET, PacketType.SYN):
                # As libutp does: tell the sender this connection is gone, so it stops
                # resending (it matches the RESET on the id it sends with).
                reset = Packet(PacketType.RESET, packet.connection_id, 0, packet.seq_nr)
                self.send([reset.encode()], peer)
            return
        connection = stream.connection
        connection.receive(packet, self.loop.time())
        if connection.unacked_arrivals >= _ACK_EVERY:
            stream.service()  # an ack now, within a burst, besides the one at its end
        # An accepted connection is handed over once the peer has spoken again (the first
        # test is the cheap one that is false for every datagram after that).
        if (
            not stream.protocol_ready
            and not stream.outgoing
            and self._on_accept is not None
            and connection.established
            and connection.is_open
            and not stream.connected.done()
        ):
            stream.connected.set_result(None)
            self._on_accept(stream)
        self.touch(stream)

    def error_received(self, exc: Exception) -> None:
        log.debug("uTP socket %s: %s", self.sockname, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.socket_closed = True
        for stream in list(self.streams.values()):
            stream.socket_gone()
        self.streams.clear()
        self._touched.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    # ---- connections --------------------------------------------------------------------------
    def _by_send_id(self, peer: Address, send_id: int) -> UtpStream | None:
        for (address, _), stream in self.streams.items():
            if address == peer and stream.connection.send_id == send_id:
                return stream
        return None

    def _accept(self, syn: Packet, peer: Address) -> None:
        assert self._on_accept is not None
        if self.max_connections is not None and len(self.streams) >= self.max_connections:
            return  # the peer retries its SYN
        connection = UtpConnection.accept(syn, self.loop.time(), self._rng, self.settings)
        stream = UtpStream(self, connection, peer)
        self.streams[(peer, connection.recv_id)] = stream
        self._empty.clear()
        self.touch(stream)  # our answer; the protocol comes once the peer speaks again

    def open(self, peer: Address) -> UtpStream:
        """A new outgoing connection (its SYN leaves at the next flush)."""
        if self.max_connections is not None and len(self.streams) >= self.max_connections:
            raise UtpError(f"already {len(self.streams)} uTP connections on this socket")
        while True:
            recv_id = self._rng.randrange(1 << 16)
            if (peer, recv_id) not in self.streams:
                break
        connection = UtpConnection.connect(recv_id, self.loop.time(), self._rng, self.settings)
        stream = UtpStream(self, connection, peer)
        stream.outgoing = True
        self.streams[(peer, recv_id)] = stream
        self._empty.clear()
        self.touch(stream)
        return stream

    def forget(self, stream: UtpStream) -> None:
        stream.stop_timer()
        key = (stream.peer, stream.connection.recv_id)
        if self.streams.get(key) is stream:
            del self.streams[key]
        if not self.streams:
            self._empty.set()
        if self.close_when_empty and not self.streams and self.transport is not None:
            self.transport.close()

    # ---- output -------------------------------------------------------------------------------
    def touch(self, stream: UtpStream) -> None:
        if self.socket_closed:
            return  # nothing can be sent or received any more: no more work, no timers
        self._touched[stream] = None
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        touched, self._touched = self._touched, {}
        for stream in touched:
            stream.service()

    def send(self, datagrams: list[bytes], peer: Address) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for datagram in datagrams:
            transport.sendto(datagram, peer)

    async def wait_empty(self, timeout: float) -> None:
        """Until every connection has ended on its own, or ``timeout``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._empty.wait()

    def close(self) -> None:
        for stream in list(self.streams.values()):
            stream.abort()
            stream.service()
        if self.transport is not None:
            self.transport.close()


async def _bind(
    endpoint_factory: Callable[[asyncio.AbstractEventLoop], UtpEndpoint], host: str, port: int
) -> UtpEndpoint:
    loop = asyncio.get_running_loop()
    _, endpoint = await loop.create_datagram_endpoint(
        lambda: endpoint_factory(loop), local_addr=(host, port), family=socket.AF_INET
    )
    return endpoint


class UtpServer:
    """A listening uTP socket: each accepted connection gets ``protocol_factory()``."""

    def __init__(self, endpoint: UtpEndpoint) -> None:
        self.endpoint = endpoint

    @classmethod
    async def listen(
        cls,
        host: str,
        port: int,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        *,
        settings: UtpSettings | None = None,
        max_connections: int | None = None,
    ) -> UtpServer:
        def accept(stream: UtpStream) -> None:
            stream.start(protocol_factory())

        return cls(
            await _bind(
                lambda loop: UtpEndpoint(loop, settings or UtpSettings(), max_connections, accept),
                host,
                port,
            )
        )

    @property
    def sockname(self) -> Address:
        return self.endpoint.sockname

    async def close(self, linger: float = 0.0) -> None:
        """Give closing connections up to ``linger`` seconds to end cleanly, then destroy
        the rest and close the socket."""
        endpoint = self.endpoint
        for stream in list(endpoint.streams.values()):
            if not stream.protocol_ready:  # a handshake never completed: nothing to say
                endpoint.forget(stream)
        if linger > 0:
            await endpoint.wait_empty(linger)
        endpoint.close()
        await endpoint.closed


class UtpClient:
    """Connections to any peers over one UDP socket (``max_connections`` open at once)."""

    def __init__(
        self,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        settings: UtpSettings | None = None,
        local_address: Address = ("0.0.0.0", 0),
    ) -> None:
        self.max_connections = max_connections
        self.settings = settings or UtpSettings()
        self.local_address = local_address
        self.endpoint: UtpEndpoint | None = None
        self._binding = asyncio.Lock()

    async def _endpoint(self) -> UtpEndpoint:
        async with self._binding:
            if self.endpoint is None or self.endpoint.closed.done():
                host, port = self.local_address
                self.endpoint = await _bind(
                    lambda loop: UtpEndpoint(loop, self.settings, self.max_connections),
                    host,
                    port,
                )
            return self.endpoint

    async def connect(
        self, host: str, port: int, protocol_factory: Callable[[], P], timeout: float = 10.0
    ) -> tuple[UtpStream, P]:
        endpoint = await self._endpoint()
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
        peer = infos[0][4]
        stream = endpoint.open((str(peer[0]), int(peer[1])))
        protocol = protocol_factory()
        stream.set_protocol(protocol)
        try:
            async with asyncio.timeout(timeout):
                await stream.connected
        except BaseException as exc:
            stream.abort()
            if isinstance(exc, TimeoutError):
                raise UtpError(f"no uTP answer from {host}:{port}") from exc
            raise
        stream.start(protocol)
        return stream, protocol

    @property
    def connections(self) -> int:
        return 0 if self.endpoint is None else len(self.endpoint.streams)

    async def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            await self.endpoint.closed


async def open_utp_connection(
    host: str, port: int, *, client: UtpClient | None = None, limit: int = 2**16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` over uTP. Without ``client``, the connection has a UDP
    socket of its own, closed with it."""
    loop = asyncio.get_running_loop()
    utp_client = client or UtpClient(max_connections=1)
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    stream, protocol = await utp_client.connect(
        host, port, lambda: asyncio.StreamReaderProtocol(reader)
    )
    if client is None:
        assert utp_client.endpoint is not None
        utp_client.endpoint.close_when_empty = True
    return reader, asyncio.StreamWriter(stream, protocol, reader, loop)
