"""Graceful shutdown: SIGTERM to a server with streams in raw mode, some stalled with their
bytes stored, some just after a burst the server is still reading. Every client gets 503 with
the bytes it still has to send, the process exits within its shutdown timeout, and every
stream resumes on a new server to completion.

Clients still writing when the 503 comes are the subject of the last test here."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from tests.conftest import SpawnServer
from tests.durability.conftest import Connect
from tests.durability.support import (
    ROUTE,
    MiB,
    StateProbe,
    Upload,
    grant,
    missing,
    sha256,
    status,
)
from xstream_server.protocol import Packet

SHUTDOWN_TIMEOUT = 3.0


async def test_sigterm_answers_503_and_every_stream_resumes(
    spawn_server: SpawnServer, redis_url: str, tmp_path: Path
) -> None:
    flags = ("--checkpoint-bytes", str(MiB))
    env = {"XSTREAM_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT)}
    server = spawn_server(*flags, env=env)
    stalled = [Upload(os.urandom(4 * MiB + i)) for i in range(3)]
    bursts = [Upload(os.urandom(16 * MiB + i)) for i in range(2)]
    uploads = stalled + bursts
    ready = asyncio.Barrier(len(uploads) + 1)
    stopped: dict[int, int] = {}  # upload → durable offset its 503 reported

    async def stream(u: Upload, stall: bool) -> None:
        link = await u.connect(server.port)
        offset, window = grant(await link.request(u.stream_request()), u.total)
        assert (offset, window) == (0, u.total)
        # Stalled: the bytes are in before SIGTERM. Burst: SIGTERM follows at once, while
        # the server is still reading megabytes from the socket.
        await link.send_raw(u.data[: MiB + 1234] if stall else u.data[: 6 * MiB + 4321])
        await ready.wait()
        reply = await link.receive()
        assert status(reply) == 503, reply.headers
        assert reply.headers["x-stream"] == f"{missing(reply)}:0"
        stopped[id(u)] = u.total - missing(reply)
        await link.wait_closed()

    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with asyncio.timeout(60):
            tasks = [asyncio.create_task(stream(u, u in stalled)) for u in uploads]
            await ready.wait()
            assert server.process is not None
            server.process.terminate()
            signalled = time.monotonic()
            await asyncio.gather(*tasks)
            code = await asyncio.to_thread(server.process.wait, 30)
            took = time.monotonic() - signalled
            print(
                f"\nSIGTERM with {len(uploads)} streams in raw mode: exited in {took:.2f} s; "
                f"durable offsets {sorted(stopped.values())}"
            )
            assert code == 0
            assert took < SHUTDOWN_TIMEOUT + 5
            for u in uploads:
                assert u.key is not None
                durable = stopped[id(u)]
                assert 0 < durable < u.total
                assert await probe.recorded_offset(u.key) == durable
            # A new server picks every stream up where the 503 said it stopped.
            server = spawn_server(*flags, env=env)
            for u in uploads:
                link = await u.connect(server.port)
                resume = await link.request(u.stream_request())
                assert grant(resume, u.total) == (stopped[id(u)], u.total - stopped[id(u)])
                await link.send_raw(u.data[stopped[id(u)] :])
                done = await link.receive()
                assert status(done) == 0
                assert done.headers["x-stream-checksum"] == sha256(u.data)
                link.close()
                assert probe.complete(done.headers["x-stream-key"]).read_bytes() == u.data
    finally:
        await probe.close()


async def test_clients_still_writing_get_the_503(
    spawn_server: SpawnServer, connect: Connect
) -> None:
    """The 503 leaves while raw bytes keep arriving. Closing at once with unread input would
    reset the connection, and a reset can destroy the packet on its way or make the client's
    failing write drop it; the server half-closes and drains instead (tcp.py)."""
    server = spawn_server()
    bodies = [os.urandom(32 * MiB + i) for i in range(3)]
    going = asyncio.Barrier(len(bodies) + 1)

    async def send(data: bytes) -> Packet:
        link = await connect(server.port)
        accept = await link.request({"route": ROUTE, "x-stream": f"{len(data)}:65536"})
        assert status(accept) == 0
        await link.send_raw(data[: 2 * MiB])
        await going.wait()
        await link.send_raw(data[2 * MiB :])  # flat out, until the server answers or resets
        return await link.receive()

    async with asyncio.timeout(30):
        replies = [asyncio.create_task(send(data)) for data in bodies]
        await going.wait()
        assert server.process is not None
        server.process.terminate()
        for reply in await asyncio.gather(*replies):
            assert status(reply) == 503
            assert missing(reply) > 0
