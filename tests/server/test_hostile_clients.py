"""What a hostile or careless client can make the server hold, and how it is answered: a
packet dripped byte by byte meets a deadline its drips do not reset; a client that
half-closes still gets its completion; stalled raw windows hold no buffer of their own; and
the memory a burst of half-sent packets took goes back once they close."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import psutil

from tests.conftest import ServerFactory, SpawnServer
from tests.durability.support import until
from tests.wire import Wire, status
from xstream_server.protocol import encode_packet
from xstream_server.protocol.codec import PREFIX

MiB = 1024 * 1024


async def test_a_dripped_packet_meets_its_deadline(make_server: ServerFactory) -> None:
    header = b"route: /echo\r\ndata-format: json\r\n"
    frame = PREFIX.pack(len(header), 2) + header + b"[]"
    async with (
        make_server(packet_timeout=0.5, idle_timeout=30) as server,
        await Wire.connect(server.port) as wire,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def drip() -> None:
            for byte in frame[:-1]:  # every drip is activity; the packet is never whole
                await wire.send_raw(bytes([byte]))
                await asyncio.sleep(0.05)

        dripping = asyncio.create_task(drip())
        try:
            reply = await wire.receive(timeout=10)
        finally:
            dripping.cancel()
        assert status(reply) == 408
        assert "packet" in reply.headers["message"]
        assert loop.time() - started < 5  # the idle timeout (30 s) was not what ended it
        assert await wire.closed_by_server()


async def test_pipelined_requests_are_not_cut_by_the_packet_deadline(
    make_server: ServerFactory,
) -> None:
    """The deadline runs per packet: a client that keeps a connection busy with whole
    packets for longer than the deadline is served throughout."""
    packet = encode_packet({"route": "/echo", "data-format": "json"}, b"[1]")
    async with (
        make_server(packet_timeout=0.3) as server,
        await Wire.connect(server.port) as wire,
    ):
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.0
        while loop.time() < end:
            await wire.send_raw(packet * 50 + packet[:5])  # always mid-packet at the end
            for _ in range(50):
                assert status(await wire.receive()) == 0
            await wire.send_raw(packet[5:])
            assert status(await wire.receive()) == 0


async def test_a_client_that_half_closes_still_gets_its_completion(
    make_server: ServerFactory,
) -> None:
    data = os.urandom(3 * MiB + 5)
    async with make_server() as server, await Wire.connect(server.port) as wire:
        accept = await wire.request({"route": "/upload-file", "x-stream": f"{len(data)}:65536"})
        assert status(accept) == 0
        await wire.send_raw(data)
        wire.writer.write_eof()  # nothing more from us; we still read
        done = await wire.receive()
        assert status(done) == 0
        assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
        assert await wire.closed_by_server()


async def test_a_half_close_inside_a_window_is_answered_with_what_is_missing(
    make_server: ServerFactory,
) -> None:
    async with make_server() as server, await Wire.connect(server.port) as wire:
        accept = await wire.request({"route": "/upload-file", "x-stream": f"{MiB}:65536"})
        await wire.send_raw(b"x" * 1000)
        wire.writer.write_eof()
        done = await wire.receive()
        assert status(done) == 400
        assert done.headers["x-stream-key"] == accept.headers["x-stream-key"]
        assert done.headers["x-stream"] == f"{MiB - 1000}:0"


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def test_stalled_windows_hold_no_buffers_of_their_own(spawn_server: SpawnServer) -> None:
    """100 windows with 1 MiB buffers, each sent 1 MiB − 1 byte and left: with a buffer
    each, that pins about 100 MiB; inline windows share one."""
    server = spawn_server()
    assert server.process is not None
    pid = server.process.pid
    writers: list[asyncio.StreamWriter] = []
    try:
        async with asyncio.timeout(60):
            before = _rss(pid)
            for _ in range(100):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writers.append(writer)
                writer.write(
                    encode_packet({"route": "/upload-file", "x-stream": f"{2 * MiB}:{MiB}"})
                )
                assert b"status: 0" in await reader.read(4096)
                writer.write(b"\0" * (MiB - 1))
                await writer.drain()
            # Every byte sent has reached the server (it stores them as they come).
            await until(lambda: _stored_bytes(pid) >= 100 * (MiB - 1) * 0.95, step=0.05)
            grown = _rss(pid) - before
    finally:
        for writer in writers:
            writer.transport.abort()
    assert grown < 40 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"


def _stored_bytes(pid: int) -> int:
    """Bytes the server process has written so far (its write counter)."""
    return int(psutil.Process(pid).io_counters().write_chars)


async def test_memory_of_half_sent_packets_goes_back_when_they_close(
    spawn_server: SpawnServer,
) -> None:
    server = spawn_server()
    assert server.process is not None
    pid = server.process.pid
    header = b"route: /echo\r\ndata-format: json\r\n"
    sockets: list[socket.socket] = []
    try:
        async with asyncio.timeout(60):
            before = _rss(pid)
            for _ in range(100):
                sock = socket.create_connection(("127.0.0.1", server.port))
                sock.sendall(PREFIX.pack(len(header), MiB) + header + b"[" * (900 * 1024))
                sockets.append(sock)
            await until(lambda: _rss(pid) - before > 60 * MiB, step=0.05)  # held, as it must
            for sock in sockets:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                sock.close()  # a reset: the server sees them gone at once
            sockets.clear()
            await until(lambda: _rss(pid) - before < 20 * MiB, step=0.05)
    finally:
        for sock in sockets:
            sock.close()


async def test_a_client_at_its_stream_limit_can_take_over_its_own_stalled_stream(
    make_server: ServerFactory,
) -> None:
    request = {"route": "/upload-file", "x-stream": f"{MiB}:65536"}
    async with make_server(max_streams_per_client=2) as server:
        stalled = [await Wire.connect(server.port) for _ in range(2)]
        keys = []
        for wire in stalled:
            accept = await wire.request(request)
            assert status(accept) == 0
            await wire.send_raw(b"x" * 100)
            keys.append(accept.headers["x-stream-key"])
        async with await Wire.connect(server.port) as wire:
            assert status(await wire.request(request)) == 429  # a third stream
            resume = await wire.request({**request, "x-stream-key": keys[0]})
            assert status(resume) == 0  # its own stalled stream, taken over
            assert resume.headers["x-stream-offset"] == "100"
            superseded = await stalled[0].receive()
            assert status(superseded) == 409
        for wire in stalled:
            await wire.close()
