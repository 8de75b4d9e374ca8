"""Start-up reconcile (PROTOCOL §3.5): a part file holding more than its recorded offset is
cut back when a server starts, so a resume never builds on bytes that were not durable; but
a part that another live server is writing right now is left alone."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.conftest import ServerFactory, SpawnServer
from tests.durability.conftest import Connect
from tests.durability.support import (
    ROUTE,
    MiB,
    StateProbe,
    grant,
    missing,
    part_size,
    sha256,
    status,
    until,
)


async def test_junk_tail_is_cut_back_at_start_up(
    connect: Connect, make_server: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    data = os.urandom(2 * MiB + 999)
    request: dict[str, str | int] = {"route": ROUTE, "x-stream": f"{len(data)}:65536"}
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with asyncio.timeout(30):
            async with make_server() as running:
                link = await connect(running.port)
                key = (await link.request(request)).headers["x-stream-key"]
                await link.send_raw(data[:MiB])
                await until(lambda: part_size(probe.part(key)) == MiB)
                # Closing the server settles the window: what it received is durable.
            stopped = await link.receive()
            assert status(stopped) == 503
            durable = len(data) - missing(stopped)
            assert 0 < durable <= MiB
            assert await probe.recorded_offset(key) == durable
            # While no server runs, bytes that were never acknowledged appear past the
            # durable offset, as unsynced writes can after a crash.
            part = probe.part(key)
            with part.open("ab") as f:
                f.write(os.urandom(300_000))
            async with make_server() as running:
                assert part.stat().st_size == durable  # cut back before serving anything
                assert part.read_bytes() == data[:durable]
                link = await connect(running.port)
                resume = await link.request({**request, "x-stream-key": key})
                assert status(resume) == 0
                offset, _ = grant(resume, len(data))
                assert offset == durable
                await link.send_raw(data[offset:])
                done = await link.receive()
                link.close()
        # A new process hashes the stored prefix from the file: the checksum covers it.
        assert status(done) == 0
        assert done.headers["x-stream-checksum"] == sha256(data)
        assert probe.complete(key).read_bytes() == data
    finally:
        await probe.close()


async def test_start_up_leaves_a_part_being_written_elsewhere_alone(
    connect: Connect,
    spawn_server: SpawnServer,
    make_server: ServerFactory,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """A second server starting on the same data directory while the first one streams: the
    first one's part is longer than its record (bytes written since the last checkpoint),
    yet those bytes are not junk; cutting them would leave a hole in the finished file."""
    data = os.urandom(3 * MiB)
    request: dict[str, str | int] = {"route": ROUTE, "x-stream": f"{len(data)}:65536"}
    probe = StateProbe(redis_url, tmp_path / "data")
    first = spawn_server("--checkpoint-bytes", str(MiB), "--checkpoint-seconds", "60")
    try:
        async with asyncio.timeout(30):
            link = await connect(first.port)
            key = (await link.request(request)).headers["x-stream-key"]
            # First just past 1 MiB, so that the one checkpoint lands there (reads are stored
            # as they come, up to 1 MiB each: it lands at the first read boundary past 1 MiB);
            # then the rest, which is short of the next checkpoint.
            first_part, written = MiB + MiB // 16, MiB + MiB // 2
            await link.send_raw(data[:first_part])

            async def checkpointed() -> bool:
                recorded = await probe.recorded_offset(key)
                return recorded is not None and recorded >= MiB

            await until(checkpointed)
            await link.send_raw(data[first_part:written])

            async def written_past_the_checkpoint() -> bool:
                recorded = await probe.recorded_offset(key)
                size = part_size(probe.part(key))
                return size == written and recorded is not None and MiB <= recorded < written

            await until(written_past_the_checkpoint)
            async with make_server():
                assert probe.part(key).stat().st_size == written
            await link.send_raw(data[written:])
            done = await link.receive()
            link.close()
        assert status(done) == 0
        assert done.headers["x-stream-checksum"] == sha256(data)
        assert probe.complete(key).read_bytes() == data
    finally:
        await probe.close()
