"""The embedded Redis is supervised (issue 13, finding 4): killed, it is restarted and an
upload cut by its death resumes to the right sha256; it dies with its server, even one
killed with SIGKILL; a redis-server left serving the data directory is stopped at start-up;
a second server on a data directory whose embedded Redis runs is refused. Never two Redis
on one append-only file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from tests.conftest import REPO, ServerFactory, ServerProcess, SpawnServer
from tests.durability.support import MiB, Upload, grant, sha256, status, until
from tests.security.support import free_port, older_redis, redis_child, redis_servers, running
from tests.wire import Wire

WINDOW = MiB


async def test_embedded_redis_killed_mid_upload_is_restarted_and_the_upload_completes(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    server = await asyncio.to_thread(
        spawn_server,
        *("--log-level", "DEBUG", "--lease-seconds", "1"),
        redis=None,
        env={"XSTREAM_UPLOAD_WINDOW": str(WINDOW)},
    )
    assert server.process is not None
    first = redis_child(server.process.pid)
    upload = Upload(os.urandom(3 * WINDOW + 12345))
    async with asyncio.timeout(30):
        link = await upload.connect(server.port)
        offset, window = grant(await link.request(upload.stream_request()), upload.total)
        await link.send_raw(upload.data[offset : offset + window])
        assert status(await link.receive()) == 0
        assert upload.durable == WINDOW
        offset, window = grant(await link.request(upload.stream_request()), upload.total)
        await link.send_raw(upload.data[offset : offset + window // 2])
        first.send_signal(signal.SIGKILL)
        await link.send_raw(upload.data[offset + window // 2 : offset + window])
        await link.receive()  # 503 while Redis is down, 0 if it came back in time
        link.abort()
        assert upload.durable >= WINDOW

        def restarted() -> bool:
            return any("embedded redis-server restarted" in line for line in server.log)

        await until(restarted)
        assert await upload.run(server.port), upload.errors
    assert upload.checksum == sha256(upload.data)
    assert set(upload.statuses) <= {503}, upload.errors
    assert (tmp_path / "data" / "streams" / "complete" / str(upload.key)).read_bytes() == (
        upload.data
    )
    second = redis_child(server.process.pid)
    assert second.pid != first.pid
    assert [p.pid for p in redis_servers(tmp_path / "data" / "redis")] == [second.pid]
    log = "".join(server.log)
    assert "exited with status -9" in log
    password = (tmp_path / "data" / "redis" / "password").read_text().strip()
    assert password not in log
    assert password not in " ".join(second.cmdline())


async def test_kill_9_of_the_server_takes_its_redis_along_and_a_restart_runs_just_one(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    directory = tmp_path / "data" / "redis"
    server = await asyncio.to_thread(spawn_server, redis=None)
    assert server.process is not None
    child = redis_child(server.process.pid)
    done = Upload(os.urandom(100_000))
    async with asyncio.timeout(20):
        assert await done.run(server.port), done.errors
        server.kill()
        await until(lambda: not running(child))  # SIGTERM from the kernel, as its parent died
        again = await asyncio.to_thread(spawn_server, redis=None)
        assert again.process is not None
        servers = redis_servers(directory)
        assert [p.pid for p in servers] == [redis_child(again.process.pid).pid]
        # The state survived: the finished stream is still known as finished.
        link = await done.connect(again.port)
        reply = await link.request(done.stream_request())
        link.abort()
    assert status(reply) == 0 and reply.headers["x-stream-offset"] == str(done.total)


async def test_a_redis_left_serving_the_data_directory_is_stopped_at_start_up(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    directory = tmp_path / "data" / "redis"
    port = free_port()
    orphan = await asyncio.to_thread(older_redis, directory, port)  # as an older version left it
    try:
        left = aioredis.Redis(port=port)
        await left.set("left-behind", "kept")
        await left.aclose()
        async with asyncio.timeout(20), make_server(redis_url=None) as server:
            assert await asyncio.to_thread(orphan.wait, 1) == 0  # stopped cleanly by SIGTERM
            embedded = server.embedded_redis
            assert embedded is not None and embedded.process is not None
            assert [p.pid for p in redis_servers(directory)] == [embedded.process.pid]
            ours = aioredis.Redis.from_url(embedded.url)
            assert await ours.get("left-behind") == b"kept"  # its append-only file is ours now
            await ours.aclose()
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


async def test_a_second_server_on_the_same_data_directory_is_refused(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = await asyncio.to_thread(spawn_server, redis=None)
    assert first.process is not None
    ours = redis_child(first.process.pid)
    second = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "xstream_server.cli.server", "--port", "0", "--data-dir", str(data)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        cwd=REPO,
    )
    assert second.returncode == 1, second.stderr
    assert "is in use by another xstream server" in second.stderr
    assert f"(pid {first.process.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    assert [p.pid for p in redis_servers(data / "redis")] == [ours.pid]
    upload = Upload(os.urandom(100_000))  # the first one serves on, untroubled
    async with asyncio.timeout(20):
        assert await upload.run(first.port), upload.errors
    assert upload.checksum == sha256(upload.data)


async def test_the_readme_way_a_relative_data_directory_and_the_embedded_redis(
    tmp_path: Path,
) -> None:
    """``xstream-server`` with no --data-dir and no --redis-url, as ``scripts/serve`` runs
    it: the data directory is ``./data``, relative to where it was started."""
    server = ServerProcess(
        ["--port", "0", "--http-port", "0"], dict(os.environ), cwd=tmp_path
    ).start()
    try:
        async with await Wire.connect(server.port) as wire:
            reply = await wire.request({"route": "/echo", "data-format": "json"}, b"[1]")
            assert status(reply) == 0
        assert (tmp_path / "data" / "redis" / "appendonly.aof").exists()
    finally:
        assert server.terminate() == 0
