"""Out of space for real (PROTOCOL §3.3): the server's data directory is a small tmpfs. The
space granted to a stream is taken by someone else before the bytes come, so the write hits
ENOSPC: the completion is 507 with ``x-stream: M:0``, M counted from the durable offset, the
durable prefix is kept, and once space is freed the stream resumes to the right sha256."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SpawnServer
from tests.durability.conftest import Connect
from tests.durability.support import (
    ROUTE,
    MiB,
    StateProbe,
    grant,
    missing,
    sha256,
    status,
)

SIZE = "8m"


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = SIZE) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.write(b"\xff" * size)


async def test_enospc_gets_507_keeps_the_durable_prefix_and_resumes(
    spawn_server: SpawnServer, connect: Connect, redis_url: str, tmp_path: Path
) -> None:
    data = os.urandom(6 * MiB)
    request: dict[str, str | int] = {"route": ROUTE, "x-stream": f"{len(data)}:65536"}
    with small_filesystem(tmp_path / "small") as fs:
        probe = StateProbe(redis_url, fs / "data")
        server = spawn_server(
            "--checkpoint-bytes",
            str(MiB),
            data_dir=fs / "data",
            env={"XSTREAM_STORAGE_RESERVE": "0"},  # grant all the free space
        )
        try:
            async with asyncio.timeout(30):
                fill(fs / "filler-1", 4 * MiB)
                link = await connect(server.port)
                accept = await link.request(request)
                assert status(accept) == 0
                key = accept.headers["x-stream-key"]
                offset, window = grant(accept, len(data))
                assert offset == 0
                assert 3 * MiB < window < len(data)  # a partial grant: the free space
                # Between the grant and the bytes, most of that space goes elsewhere.
                fill(fs / "filler-2", 2 * MiB)
                await link.send_raw(data[:window])
                full = await link.receive()
                assert status(full) == 507, full.headers
                assert full.headers["x-stream-key"] == key
                assert full.headers["x-stream"] == f"{missing(full)}:0"
                durable = len(data) - missing(full)
                await link.wait_closed()  # raw bytes were still due: the server hangs up
                # What was reported durable is recorded and stored.
                assert await probe.recorded_offset(key) == durable
                assert 0 < durable < window
                with probe.part(key).open("rb") as f:
                    assert f.read(durable) == data[:durable]
                # Space comes back; the stream resumes from the durable offset.
                (fs / "filler-1").unlink()
                (fs / "filler-2").unlink()
                link = await connect(server.port)
                resume = await link.request({**request, "x-stream-key": key})
                assert status(resume) == 0
                offset, window = grant(resume, len(data))
                assert (offset, window) == (durable, len(data) - durable)
                await link.send_raw(data[offset:])
                done = await link.receive()
                assert status(done) == 0
                assert done.headers["x-stream-checksum"] == sha256(data)
                assert probe.complete(key).read_bytes() == data
                print(f"\nENOSPC after {durable} of {len(data)} bytes; resumed and completed")
        finally:
            server.kill()
            await probe.close()


async def test_concurrent_grants_never_promise_the_same_space_twice(
    spawn_server: SpawnServer, connect: Connect, tmp_path: Path
) -> None:
    """Two uploads that together need more than the free space, on a filesystem shared with
    the embedded Redis's append-only file: the second is granted only what the first has not
    been promised, neither write meets ENOSPC, Redis stays alive, and once space is freed the
    second stream resumes to the right sha256 and new streams are taken."""
    reserve = 8 * MiB
    first, second = os.urandom(40 * MiB), os.urandom(40 * MiB)
    with small_filesystem(tmp_path / "small", size="64m") as fs:
        server = spawn_server(
            data_dir=fs / "data", redis=None, env={"XSTREAM_STORAGE_RESERVE": str(reserve)}
        )
        async with asyncio.timeout(60):
            a, b = await connect(server.port), await connect(server.port)
            accept_a = await a.request({"route": ROUTE, "x-stream": f"{len(first)}:65536"})
            accept_b = await b.request({"route": ROUTE, "x-stream": f"{len(second)}:65536"})
            assert status(accept_a) == status(accept_b) == 0
            window_a = grant(accept_a, len(first))[1]
            window_b = grant(accept_b, len(second))[1]
            assert window_a == len(first)
            assert 0 < window_b <= 64 * MiB - reserve - window_a  # what A was not promised
            await asyncio.gather(a.send_raw(first), b.send_raw(second[:window_b]))
            done_a, done_b = await a.receive(), await b.receive()
            assert status(done_a) == 0, done_a.headers
            assert status(done_b) == 0, done_b.headers
            assert missing(done_b) == len(second) - window_b
            # Redis is alive: the state of B is answered, not 503.
            key_b = accept_b.headers["x-stream-key"]
            await b.send(
                {"route": "/stream-status", "data-format": "json"},
                b'{"key": "%s"}' % key_b.encode(),
            )
            state = await b.receive()
            assert status(state) == 0, state.headers
            resume: dict[str, str | int] = {
                "route": ROUTE,
                "x-stream": f"{len(second)}:65536",
                "x-stream-key": key_b,
            }
            full = await b.request(resume)
            assert status(full) == 507  # nothing left to promise beyond the reserve
            # Space comes back (A's finished file is taken away): B resumes and completes.
            (fs / "data" / "streams" / "complete" / accept_a.headers["x-stream-key"]).unlink()
            again = await b.request(resume)
            assert status(again) == 0
            offset, window = grant(again, len(second))
            assert (offset, window) == (window_b, len(second) - window_b)
            await b.send_raw(second[offset:])
            done = await b.receive()
            assert status(done) == 0
            assert done.headers["x-stream-checksum"] == sha256(second)
            fresh = await a.request({"route": ROUTE, "x-stream": "10:65536"})
            assert status(fresh) == 0
