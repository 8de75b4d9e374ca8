"""The x-stream protocol over uTP against the real server (real Redis, real files)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
from pathlib import Path

import pytest

from tests.conftest import SpawnServer
from xstream_server.client import Progress, Upload, UploadClosed, UploadResult, connect, upload
from xstream_server.server import Server

from .conftest import random_file, utp_address
from .relay import LossyRelay

MiB = 1024 * 1024


async def test_uTP_is_off_unless_a_port_is_given(server: Server) -> None:
    assert server.utp_port is None
    assert server.utp_transport is None


async def test_requests_over_utp(utp_server: Server) -> None:
    async with connect(utp_address(utp_server), transport="utp") as conn:
        replies = await asyncio.gather(*(conn.request("/echo", json={"n": n}) for n in range(20)))
    assert [reply.json() for reply in replies] == [{"n": n} for n in range(20)]


async def test_upload_over_utp(utp_server: Server, tmp_path: Path) -> None:
    path, digest = random_file(tmp_path, 8 * MiB)
    result = await upload(path, server=utp_address(utp_server), transport="utp")
    assert result.sha256 == digest
    assert result.size == 8 * MiB
    stored = utp_server.settings.data_dir / "streams"
    assert stored.exists()


async def test_upload_through_a_lossy_relay(utp_server: Server, tmp_path: Path) -> None:
    assert utp_server.utp_port is not None
    loop = asyncio.get_running_loop()
    relay_transport, relay = await loop.create_datagram_endpoint(
        lambda: LossyRelay(("127.0.0.1", utp_server.utp_port or 0), seed=4, rate=0.02),
        local_addr=("127.0.0.1", 0),
    )
    try:
        port = relay_transport.get_extra_info("sockname")[1]
        path, digest = random_file(tmp_path, 64 * MiB)
        result = await upload(path, server=f"127.0.0.1:{port}", transport="utp")
        assert result.sha256 == digest
        assert all(relay.counts[kind] > 10 for kind in ("dropped", "duplicated", "delayed"))
    finally:
        relay_transport.close()


@pytest.mark.parametrize(("first", "then"), [("utp", "tcp"), ("tcp", "utp")])
async def test_a_stream_started_on_one_transport_resumes_on_the_other(
    utp_server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    first: str,
    then: str,
) -> None:
    monkeypatch.setenv("XSTREAM_UPLOAD_WINDOW", str(2 * MiB))
    size = 8 * MiB
    path, digest = random_file(tmp_path, size)
    addresses = {"tcp": f"127.0.0.1:{utp_server.port}", "utp": utp_address(utp_server)}
    closing: list[asyncio.Task[UploadResult | None]] = []

    def on_progress(progress: Progress) -> None:
        if not closing and progress.sent >= 3 * MiB:
            closing.append(asyncio.ensure_future(job.close()))

    job = Upload(path, server=addresses[first], transport=first, on_progress=on_progress)  # type: ignore[arg-type]
    with pytest.raises(UploadClosed) as stopped:
        await job.run()
    await closing[0]
    assert stopped.value.offset == 4 * MiB
    resumed = await upload(path, server=addresses[then], transport=then, key=job.key)  # type: ignore[arg-type]
    assert resumed.resumed_from == 4 * MiB
    assert resumed.sha256 == digest


async def test_junk_datagrams_leave_the_server_serving(utp_server: Server) -> None:
    rng = random.Random(11)
    target = ("127.0.0.1", utp_server.utp_port or 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
        for _ in range(2000):
            junk.sendto(rng.randbytes(rng.randrange(0, 300)), target)
        for kind in range(5):  # well-formed headers, made-up connections
            for _ in range(50):
                junk.sendto(bytes([(kind << 4) | 1, 0]) + rng.randbytes(40), target)
    async with connect(utp_address(utp_server), transport="utp") as conn:
        reply = await conn.request("/echo", json={"alive": True})
    assert reply.json() == {"alive": True}


def test_xstream_server_utp_port_flag(spawn_server: SpawnServer, tmp_path: Path) -> None:
    process = spawn_server("--utp-port", "0")
    match = re.search(r"uTP on [\d.]+:(\d+)", "".join(process.log))
    assert match is not None
    utp_port = int(match.group(1))
    path, digest = random_file(tmp_path, MiB)

    async def go() -> UploadResult:
        return await upload(path, server=f"127.0.0.1:{utp_port}", transport="utp")

    assert asyncio.run(go()).sha256 == digest
    assert process.terminate() == 0
    assert os.path.exists(tmp_path / "data")
