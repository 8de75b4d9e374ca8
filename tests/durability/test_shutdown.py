"""Graceful shutdown: SIGTERM to a server with streams in raw mode, some stalled and some
sending flat out. Every client gets 503 with the bytes it still has to send, the process
exits within its shutdown timeout, and every stream resumes on a new server to completion."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from tests.conftest import SpawnServer
from tests.durability.support import (
    MiB,
    StateProbe,
    Upload,
    grant,
    missing,
    sha256,
    status,
)

SHUTDOWN_TIMEOUT = 3.0


async def test_sigterm_answers_503_and_every_stream_resumes(
    spawn_server: SpawnServer, redis_url: str, tmp_path: Path
) -> None:
    flags = ("--checkpoint-bytes", str(MiB))
    env = {"XSTREAM_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT)}
    server = spawn_server(*flags, env=env)
    stalled = [Upload(os.urandom(4 * MiB + i)) for i in range(3)]
    busy = [Upload(os.urandom(16 * MiB + i)) for i in range(2)]
    uploads = stalled + busy
    ready = asyncio.Barrier(len(uploads) + 1)
    stopped: dict[int, int] = {}  # upload → durable offset its 503 reported

    async def stream(u: Upload, stall: bool) -> None:
        link = await u.connect(server.port)
        offset, window = grant(await link.request(u.stream_request()), u.total)
        assert (offset, window) == (0, u.total)
        if stall:
            await link.send_raw(u.data[: MiB + 1234])
            await ready.wait()
        else:
            # Keeps sending until the server answers: the 503 comes long before 16 MiB.
            await link.send_raw(u.data[: 2 * MiB])
            rest = asyncio.create_task(link.send_raw(u.data[2 * MiB :]))
            await ready.wait()
            assert await rest < u.total - 2 * MiB
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
            print(f"\nSIGTERM with {len(uploads)} streams in raw mode: exited in {took:.2f} s")
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
