"""The sweeper (PROTOCOL §3.6) on a crafted mix of streams: it deletes expired incomplete
streams with their data, part files nobody has a record of, and records whose part is gone;
live streams, streams within their expiry and completed streams survive it untouched."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from tests.conftest import ServerFactory
from tests.durability.conftest import Connect
from tests.durability.support import Link, StateProbe, grant, part_size, sha256, status, until
from xstream_server import App, CompletedUpload
from xstream_server.server import Server

SHORT = 60.0  # seconds of inactivity after which a /short stream expires


def sweeper_app() -> App:
    app = App()

    @app.stream("/short", expiry=SHORT)
    async def short(upload: CompletedUpload) -> Any:
        return None

    @app.stream("/long")
    async def long(upload: CompletedUpload) -> Any:
        return None

    return app


def stream_request(route: str, data: bytes, key: str | None = None) -> dict[str, str | int]:
    headers: dict[str, str | int] = {"route": route, "x-stream": f"{len(data)}:4096"}
    if key is not None:
        headers["x-stream-key"] = key
    return headers


async def start(link: Link, route: str, data: bytes, sent: int) -> str:
    """Open a stream and send its first ``sent`` bytes."""
    reply = await link.request(stream_request(route, data))
    assert status(reply) == 0
    await link.send_raw(data[:sent])
    return reply.headers["x-stream-key"]


async def left_behind(server: Server, connect: Connect, route: str, data: bytes) -> str:
    """A stream whose client sent half of it and went away; settled once this returns."""
    link = await connect(server.port)
    key = await start(link, route, data, len(data) // 2)
    await until(lambda: key in server.engine.sessions if server.engine else False)
    link.abort()
    await until(lambda: server.engine is not None and key not in server.engine.sessions)
    return key


async def test_sweep_removes_exactly_the_dead_streams(
    make_server: ServerFactory, connect: Connect, redis_url: str, tmp_path: Path
) -> None:
    data = {name: os.urandom(50_000 + i) for i, name in enumerate("abcdefg")}
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with (
            asyncio.timeout(30),
            make_server(app=sweeper_app(), orphan_grace=0, sweep_interval=3600) as server,
        ):
            assert server.engine is not None
            sessions = server.engine.sessions
            expired = [
                await left_behind(server, connect, "/short", data["a"]),
                await left_behind(server, connect, "/short", data["b"]),
            ]
            kept = await left_behind(server, connect, "/long", data["c"])
            partless = await left_behind(server, connect, "/long", data["d"])
            probe.part(partless).unlink()
            orphan = "orphan-part-without-any-record-0"
            probe.part(orphan).write_bytes(b"left by nobody")
            # A live stream, idle past its expiry only in the sweeper's future.
            live_link = await connect(server.port)
            live = await start(live_link, "/short", data["e"], 10_000)
            await until(lambda: live in sessions)
            # A completed stream: its file and record are not the sweeper's business.
            done_link = await connect(server.port)
            completed = await start(done_link, "/short", data["f"], len(data["f"]))
            assert status(await done_link.receive()) == 0

            counts = await server.engine.sweep(now=time.time() + SHORT + 1)

            assert counts == {"expired": 2, "orphan_parts": 1, "orphan_records": 1}
            parts = {p.name for p in probe.part(kept).parent.iterdir()}
            assert parts == {f"{kept}.part", f"{live}.part"}
            assert {p.name for p in probe.complete(kept).parent.iterdir()} == {completed}
            for key in (*expired, partless):
                assert await probe.record(key) == {}
            assert (await probe.record(kept))["state"] == "active"
            assert (await probe.record(live))["state"] == "active"
            assert (await probe.record(completed))["state"] == "complete"
            assert await probe.expiry_index() == {kept, live}
            # Nothing is left to sweep.
            again = await server.engine.sweep(now=time.time() + SHORT + 1)
            assert again == {"expired": 0, "orphan_parts": 0, "orphan_records": 0}

            # Deleted keys get 410; the survivors carry on.
            link = await connect(server.port)
            for key, route, body in (
                (expired[0], "/short", data["a"]),
                (expired[1], "/short", data["b"]),
                (partless, "/long", data["d"]),
            ):
                gone = await link.request(stream_request(route, body, key))
                assert (status(gone), gone.headers["x-stream"]) == (410, "-1")
            await live_link.send_raw(data["e"][10_000:])
            assert (await live_link.receive()).headers["x-stream-checksum"] == sha256(data["e"])
            resume = await link.request(stream_request("/long", data["c"], kept))
            offset, _ = grant(resume, len(data["c"]))
            assert offset == len(data["c"]) // 2
            await link.send_raw(data["c"][offset:])
            assert (await link.receive()).headers["x-stream-checksum"] == sha256(data["c"])
            repeat = await link.request(stream_request("/short", data["f"], completed))
            assert status(repeat) == 0
            assert (await link.receive()).headers["x-stream-checksum"] == sha256(data["f"])
        assert probe.complete(completed).read_bytes() == data["f"]
    finally:
        await probe.close()


async def test_periodic_sweeper_deletes_a_stream_past_its_expiry(
    make_server: ServerFactory, connect: Connect, redis_url: str, tmp_path: Path
) -> None:
    data = os.urandom(20_000)
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with (
            asyncio.timeout(30),
            make_server(stream_expiry=0.3, sweep_interval=0.1) as server,
        ):
            key = await left_behind(server, connect, "/upload-file", data)
            assert part_size(probe.part(key)) == len(data) // 2
            await until(lambda: part_size(probe.part(key)) < 0)
            assert await probe.record(key) == {}
            link = await connect(server.port)
            gone = await link.request(stream_request("/upload-file", data, key))
            assert status(gone) == 410
    finally:
        await probe.close()
