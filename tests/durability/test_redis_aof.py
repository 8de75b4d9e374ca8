"""An external Redis configured as docs/OPERATING.md asks (``appendonly yes``,
``appendfsync always``), killed with SIGKILL the moment the server has answered: once it
restarts from its append-only file, everything the server told its clients is still
there. A completed stream is still complete with its result (``/stream-status`` over HTTP,
and a resume repeats the result), and a stream cut after its first window resumes from the
offset the client was told. (``test_redis_outage`` kills Redis while windows are being
filled, in-process; this one kills it after the answers, under a ``xstream-server`` process.)

Run with ``appendonly no`` this test fails (410: the streams are gone). It cannot tell
``appendfsync always`` from ``everysec``: Redis writes each command to the file before it
answers under both, so a killed process loses nothing either way; ``always`` adds the fsync
that makes the same hold when the machine itself goes down, which no test here simulates."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from tests.conftest import RedisProcess, ServerProcess, SpawnServer
from tests.durability.support import Link, grant, missing, sha256, status

ROUTE = "/upload-file"
WINDOW = 100_000


def http_port(server: ServerProcess) -> int:
    for line in server.log:
        if found := re.search(r"http://127\.0\.0\.1:(\d+)", line):
            return int(found.group(1))
    raise AssertionError("no HTTP port in the start-up line")


async def stream_status(port: int, key: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"http://127.0.0.1:{port}/stream-status", json={"key": key})
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result


async def window(port: int, data: bytes, key: str | None = None) -> tuple[str, int, Any]:
    """One window of ``data``'s stream: its key, the bytes still missing after it, and the
    completion's reply when none are."""
    headers: dict[str, str | int] = {"route": ROUTE, "x-stream": f"{len(data)}:65536"}
    if key is not None:
        headers["x-stream-key"] = key
    async with await Link.connect(port) as link:
        reply = await link.request(headers)
        assert status(reply) == 0, reply.headers
        offset, size = grant(reply, len(data))
        await link.send_raw(data[offset : offset + size])
        end = await link.receive()
        assert status(end) == 0, end.headers
        return reply.headers["x-stream-key"], missing(end), end


async def test_what_the_server_answered_survives_a_redis_sigkill(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    redis = RedisProcess(tmp_path / "redis")  # appendonly yes, appendfsync always
    await asyncio.to_thread(redis.start)
    try:
        client = aioredis.from_url(redis.url, decode_responses=True)
        assert await client.config_get("appendfsync") == {"appendfsync": "always"}
        assert await client.config_get("appendonly") == {"appendonly": "yes"}
        await client.aclose()
        server = spawn_server(redis=redis.url, env={"XSTREAM_UPLOAD_WINDOW": str(WINDOW)})
        web = http_port(server)
        done, cut = os.urandom(WINDOW - 1000), os.urandom(3 * WINDOW)
        async with asyncio.timeout(60):
            done_key, left, completion = await window(server.port, done)
            assert left == 0
            assert completion.headers["x-stream-checksum"] == sha256(done)
            cut_key, left, _ = await window(server.port, cut)
            told = len(cut) - left
            assert told == WINDOW
            # Answered: Redis dies at once, without a chance to write anything more.
            await asyncio.to_thread(redis.kill)
            await asyncio.to_thread(redis.start)  # same port, same append-only file
            assert await stream_status(web, done_key) == {
                "key": done_key,
                "route": ROUTE,
                "total": len(done),
                "offset": len(done),
                "state": "complete",
                "expires": None,
            }
            cut_status = await stream_status(web, cut_key)
            assert (cut_status["state"], cut_status["offset"]) == ("active", told)
            # A resume of the complete stream repeats its result; the cut one goes on
            # from where the client was told, window by window, to the right sha256.
            _, left, again = await window(server.port, done, done_key)
            assert left == 0 and again.payload == completion.payload
            for _ in range(2):
                _, left, _ = await window(server.port, cut, cut_key)
            assert left == 0
            assert (await stream_status(web, cut_key))["state"] == "complete"
        assert server.terminate() == 0
    finally:
        await asyncio.to_thread(redis.stop)
