"""The asyncio uTP adapter over loopback: real UDP sockets, no server around it."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
from collections.abc import AsyncIterator

import pytest

from xstream_server.utp import ConnectionState
from xstream_server.utp.socket import (
    UtpClient,
    UtpError,
    UtpServer,
    UtpStream,
    open_utp_connection,
)


class Echo(asyncio.Protocol):
    """Echoes bytes; closes when the peer does."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def eof_received(self) -> bool:
        assert self.transport is not None
        self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.fixture
async def echo_server() -> AsyncIterator[UtpServer]:
    server = await UtpServer.listen("127.0.0.1", 0, Echo)
    yield server
    await server.close()


async def test_stream_pair_round_trip(echo_server: UtpServer) -> None:
    reader, writer = await open_utp_connection(*echo_server.sockname)
    data = random.Random(1).randbytes(3_000_000)
    writer.write(data)
    await writer.drain()
    echoed = await reader.readexactly(len(data))
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
    writer.close()
    await writer.wait_closed()


async def test_writes_in_one_tick_are_coalesced(echo_server: UtpServer) -> None:
    reader, writer = await open_utp_connection(*echo_server.sockname)
    stream = writer.transport
    assert isinstance(stream, UtpStream)
    sent_before = stream.connection._seq_nr
    for letter in b"uTP":
        writer.write(bytes([letter]))
    assert await reader.readexactly(3) == b"uTP"
    assert (stream.connection._seq_nr - sent_before) & 0xFFFF == 1  # one DATA packet
    writer.close()
    await writer.wait_closed()


async def test_fifty_connections_over_one_client_socket(echo_server: UtpServer) -> None:
    client = UtpClient(max_connections=50)

    async def one(index: int) -> bytes:
        reader, writer = await open_utp_connection(*echo_server.sockname, client=client)
        message = f"connection {index} ".encode() * 500
        writer.write(message)
        writer.write_eof()
        echoed = await reader.read()
        writer.close()
        await writer.wait_closed()
        return echoed

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert results == [f"connection {i} ".encode() * 500 for i in range(50)]
    assert client.endpoint is not None
    assert len({w for w in [client.endpoint.sockname]}) == 1
    await client.close()


async def test_the_client_limit_holds(echo_server: UtpServer) -> None:
    client = UtpClient(max_connections=2)
    pairs = [await open_utp_connection(*echo_server.sockname, client=client) for _ in range(2)]
    with pytest.raises(UtpError):
        await open_utp_connection(*echo_server.sockname, client=client)
    for _, writer in pairs:
        writer.close()
        await writer.wait_closed()
    await client.close()


async def test_destroy_resets_the_peer(echo_server: UtpServer) -> None:
    reader, writer = await open_utp_connection(*echo_server.sockname)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    (server_stream,) = echo_server.endpoint.streams.values()
    echo = server_stream.get_protocol()
    assert isinstance(echo, Echo)
    writer.transport.abort()
    assert isinstance(await echo.lost, UtpError)
    assert server_stream.connection.state is ConnectionState.RESET


async def test_junk_datagrams_do_not_break_the_server(echo_server: UtpServer) -> None:
    rng = random.Random(5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
        for _ in range(500):
            junk.sendto(rng.randbytes(rng.randrange(0, 200)), echo_server.sockname)
        # Well-formed headers for connections that do not exist.
        for kind in (0, 1, 2, 3):
            junk.sendto(bytes([(kind << 4) | 1]) + rng.randbytes(30), echo_server.sockname)
    reader, writer = await open_utp_connection(*echo_server.sockname)
    writer.write(b"still here")
    assert await reader.readexactly(10) == b"still here"
    writer.close()
    await writer.wait_closed()
    assert echo_server.endpoint.junk > 400


async def test_nobody_listening_is_an_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        client = UtpClient()
        host, port = silent.getsockname()
        with pytest.raises(UtpError):
            await client.connect(host, port, asyncio.Protocol, timeout=0.3)
        await client.close()


async def test_packets_for_a_forgotten_connection_are_answered_with_reset(
    echo_server: UtpServer,
) -> None:
    reader, writer = await open_utp_connection(*echo_server.sockname)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    (server_stream,) = echo_server.endpoint.streams.values()
    echo_server.endpoint.forget(server_stream)  # as after a server restart
    writer.write(b"anyone?")
    with pytest.raises(UtpError, match="reset by peer"):
        await reader.read()


class Holder(asyncio.Protocol):
    """Pauses reading at its first bytes if they start with HOLD; echoes anything else."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.everything = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.received and data.startswith(b"HOLD"):
            self.transport.pause_reading()
        elif not data.startswith(b"HOLD") and not self.received:
            self.transport.write(data)
            return
        self.received += len(data)
        if self.received >= 8 * 1024 * 1024 and not self.everything.done():
            self.everything.set_result(self.received)


async def test_a_paused_reader_stalls_the_sender_without_loss() -> None:
    holders: list[Holder] = []

    def make() -> Holder:
        holders.append(Holder())
        return holders[-1]

    server = await UtpServer.listen("127.0.0.1", 0, make)
    client = UtpClient(max_connections=2)
    try:
        _, writer = await open_utp_connection(*server.sockname, client=client)
        data = b"HOLD" + random.Random(2).randbytes(8 * 1024 * 1024 - 4)
        writer.write(data)
        # Let many round trips happen (on a second connection over the same sockets).
        ping_reader, ping_writer = await open_utp_connection(*server.sockname, client=client)
        for _ in range(50):
            ping_writer.write(b"ping")
            assert await ping_reader.readexactly(4) == b"ping"
        (held,) = [s for s in server.endpoint.streams.values() if s.get_protocol() is holders[0]]
        receive_buffer = held.connection.settings.receive_buffer
        # The reader took the first packet only; the rest waits within the window it advertised,
        # and the sender holds the remainder.
        assert 0 < holders[0].received < 64 * 1024
        assert held.connection.readable <= 2 * receive_buffer
        stream = writer.transport
        assert isinstance(stream, UtpStream)
        assert stream.get_write_buffer_size() >= len(data) - 3 * receive_buffer
        held.resume_reading()
        async with asyncio.timeout(30):
            assert await holders[0].everything == len(data)
        for w in (writer, ping_writer):
            w.close()
            await w.wait_closed()
    finally:
        await client.close()
        await server.close()
