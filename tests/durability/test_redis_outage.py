"""Redis killed (SIGKILL) and restarted under load: streams in flight stop at their last
checkpoint with 503 and lose nothing, new stream requests get 503 while Redis is down, and
once it is back every stream resumes from its durable offset to the right sha256.

The test runs its own Redis on a fixed port with an append-only file fsynced at every write
(``appendfsync always``), so that it comes back on the same port with the same data."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.conftest import RedisProcess, ServerFactory
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

STREAMS = 6
WINDOW = MiB


async def test_streams_stop_at_a_checkpoint_and_resume_after_redis_restart(
    make_server: ServerFactory,
    connect: Connect,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XSTREAM_UPLOAD_WINDOW", str(WINDOW))
    redis = RedisProcess(tmp_path / "redis")  # a free port, kept across restarts
    await asyncio.to_thread(redis.start)
    uploads = [Upload(os.urandom(3 * MiB + i * 1000)) for i in range(STREAMS)]
    in_flight = asyncio.Barrier(STREAMS + 1)  # every stream half way through a window
    redis_down = asyncio.Event()
    refused = asyncio.Barrier(STREAMS + 1)  # every stream stopped, new requests refused
    redis_up = asyncio.Event()
    stopped_at: list[int] = []

    async def upload(u: Upload, port: int) -> None:
        link = await u.connect(port)
        # A first window, complete: 1 MiB reported durable.
        offset, window = grant(await link.request(u.stream_request()), u.total)
        await link.send_raw(u.data[offset : offset + window])
        assert status(await link.receive()) == 0
        assert u.durable == WINDOW
        # The second window is cut by the outage.
        reply = await link.request(u.stream_request())
        offset, window = grant(reply, u.total)
        assert (offset, window) == (WINDOW, WINDOW)
        await link.send_raw(u.data[offset : offset + window // 2])
        await in_flight.wait()
        await redis_down.wait()
        await link.send_raw(u.data[offset + window // 2 : offset + window])
        stopped = await link.receive()
        assert status(stopped) == 503, stopped.headers
        assert stopped.headers["x-stream-key"] == u.key
        stopped_at.append(u.total - missing(stopped))
        assert u.total - missing(stopped) >= WINDOW  # nothing reported before is lost
        # While Redis is down, a new stream and a resume are both refused with 503.
        other = await connect(port)
        fresh = await other.request({"route": ROUTE, "x-stream": "100:100"})
        assert (status(fresh), fresh.headers["x-stream"]) == (503, "-1")
        again = await other.request(u.stream_request())
        assert (status(again), again.headers["x-stream"]) == (503, "-1")
        await refused.wait()
        await redis_up.wait()
        # Back: resume from the durable offset, on a new connection, to completion.
        assert await u.run(port), u.errors

    probe = StateProbe(redis.url, tmp_path / "data")
    try:
        async with (
            asyncio.timeout(60),
            make_server(redis_url=redis.url, redis_timeout=0.5, lease_seconds=1.0) as running,
        ):
            tasks = [asyncio.create_task(upload(u, running.port)) for u in uploads]
            try:
                await in_flight.wait()
                await asyncio.to_thread(redis.kill)
                redis_down.set()
                await refused.wait()
                await asyncio.to_thread(redis.start)
                # What Redis kept in its append-only file covers every reported offset.
                for u in uploads:
                    await probe.check_durable(u)
                redis_up.set()
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        print(f"\nredis outage: streams stopped at {sorted(stopped_at)}")
        for u in uploads:
            assert u.checksum == sha256(u.data)
            assert u.key is not None
            assert probe.complete(u.key).read_bytes() == u.data
            offsets = [offset for _, offset in u.reports]
            assert offsets == sorted(offsets), offsets
    finally:
        await probe.close()
        await asyncio.to_thread(redis.stop)
