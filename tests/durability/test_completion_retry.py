"""The completion handler runs at least once, for real (issue 14): a handler that fails is
not a final result; the next resume runs it again, up to the route's
``completion_attempts``, with the finished file still in place; a stream whose handler
never succeeded has its finished file swept when it expires; a handler that moves the file
away, then a kill -9 before the result is recorded, does not send the offset backwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerFactory, SpawnServer
from tests.durability.conftest import Connect
from tests.durability.support import (
    Link,
    MiB,
    StateProbe,
    Upload,
    check_reports,
    grant,
    sha256,
    status,
    until,
)
from xstream_server import App, CompletedUpload, RouteError, Status
from xstream_server.app import StreamRoute
from xstream_server.state.redis import expiry_index_key

EXPIRY = 60.0


class Flaky:
    """A completion handler that fails its first ``failures`` runs, noting what each saw."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs: list[tuple[int, bool]] = []  # (attempt, the file was there)

    async def __call__(self, upload: CompletedUpload) -> Any:
        self.runs.append((upload.attempt, upload.path.exists()))
        if len(self.runs) <= self.failures:
            raise ConnectionError("the database blinked")
        return {"stored": upload.key, "attempt": upload.attempt}


def flaky_app(handler: Flaky, attempts: int = 3) -> App:
    app = App()
    app.stream("/flaky", expiry=EXPIRY, completion_attempts=attempts)(handler)
    return app


def request(data: bytes, key: str | None = None) -> dict[str, str | int]:
    headers: dict[str, str | int] = {"route": "/flaky", "x-stream": f"{len(data)}:4096"}
    if key is not None:
        headers["x-stream-key"] = key
    return headers


async def upload(link: Link, data: bytes) -> tuple[str, int, dict[str, str]]:
    """Send the whole stream; the key and the completion's status and headers."""
    accept = await link.request(request(data))
    assert status(accept) == 0
    await link.send_raw(data)
    done = await link.receive()
    return accept.headers["x-stream-key"], status(done), dict(done.headers)


async def resume(link: Link, data: bytes, key: str) -> tuple[int, dict[str, str], bytes]:
    """Resume a stream whose bytes are all stored: the grant is (T, 0), then a completion."""
    accept = await link.request(request(data, key))
    assert status(accept) == 0, accept.headers
    assert grant(accept, len(data)) == (len(data), 0)
    done = await link.receive()
    return status(done), dict(done.headers), done.payload


async def test_a_failed_handler_runs_again_on_resume_until_it_succeeds(
    make_server: ServerFactory, connect: Connect, redis_url: str, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    handler = Flaky(failures=1)
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with asyncio.timeout(30), make_server(app=flaky_app(handler)) as server:
            link = await connect(server.port)
            key, code, headers = await upload(link, data)
            # Not final: transient, and every byte is reported stored.
            assert code == 503
            assert headers["x-stream"] == "0:0"
            assert headers["x-stream-checksum"] == sha256(data)
            record = await probe.record(key)
            assert record["state"] == "finalized"
            assert int(record["offset"]) == len(data)
            assert "result_status" not in record
            assert probe.complete(key).read_bytes() == data

            code, headers, payload = await resume(link, data, key)
            assert code == 0, headers
            assert payload == f'{{"stored":"{key}","attempt":2}}'.encode()
            assert handler.runs == [(1, True), (2, True)]
            assert (await probe.record(key))["state"] == "complete"
            # From now on the success is what a resume repeats; the handler is not run.
            code, _, again = await resume(link, data, key)
            assert (code, again) == (0, payload)
            assert len(handler.runs) == 2
            # A file the app got is the app's: the sweeper leaves it.
            await server.engine.sweep(now=time.time() + 3 * EXPIRY)  # type: ignore[union-attr]
            assert probe.complete(key).read_bytes() == data
    finally:
        await probe.close()


async def test_after_completion_attempts_the_500_is_final_and_the_file_is_swept(
    make_server: ServerFactory, connect: Connect, redis_url: str, tmp_path: Path
) -> None:
    data = os.urandom(50_000)
    handler = Flaky(failures=100)
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with asyncio.timeout(30), make_server(app=flaky_app(handler, attempts=2)) as server:
            assert server.engine is not None
            link = await connect(server.port)
            key, code, _ = await upload(link, data)
            assert code == 503
            code, headers, _ = await resume(link, data, key)
            assert code == 500
            assert headers["message"] == "completion handler error"
            assert (await probe.record(key))["state"] == "complete"
            code, _, _ = await resume(link, data, key)
            assert code == 500
            assert handler.runs == [(1, True), (2, True)]
            # Within its expiry the stream and its file stay; past it both go.
            await server.engine.sweep(now=time.time() + 1)
            assert probe.complete(key).exists()
            counts = await server.engine.sweep(now=time.time() + EXPIRY + 1)
            assert counts["expired"] == 1
            assert not probe.complete(key).exists()
            assert await probe.record(key) == {}
            assert key not in await probe.expiry_index()
    finally:
        await probe.close()


async def test_a_stream_whose_client_never_came_back_after_a_failure_is_swept(
    make_server: ServerFactory, connect: Connect, redis_url: str, tmp_path: Path
) -> None:
    data = os.urandom(50_000)
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with asyncio.timeout(30), make_server(app=flaky_app(Flaky(failures=1))) as server:
            assert server.engine is not None
            link = await connect(server.port)
            key, code, _ = await upload(link, data)
            assert code == 503
            # The sweeps in between (a minute apart) keep it in the expiry index.
            await server.engine.sweep(now=time.time() + 1)
            assert key in await probe.expiry_index()
            assert probe.complete(key).exists()
            await server.engine.sweep(now=time.time() + EXPIRY + 1)
            assert not probe.complete(key).exists()
            assert await probe.record(key) == {}
            gone = await link.request(request(data, key))
            assert status(gone) == 410
    finally:
        await probe.close()


async def test_kill_9_after_the_handler_moved_the_file_never_rewinds_the_offset(
    spawn_server: SpawnServer, redis_url: str, tmp_path: Path
) -> None:
    """The handler moves ``upload.path`` away and the server dies before the result is
    recorded: the resume reports every byte as stored (never a smaller offset than the
    client was told, over 1 MiB windows) and runs the handler again, which succeeds."""
    moved = tmp_path / "moved"
    moved.mkdir()
    flags = ("--app", "tests.durability.moving_app:app")
    env = {"XSTREAM_TEST_DIR": str(moved)}
    data = os.urandom(2 * MiB + 300_000)  # three windows of at most 1 MiB
    upload = Upload(data)
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with asyncio.timeout(60):
            first = await asyncio.to_thread(spawn_server, *flags, env=env)
            sending = asyncio.create_task(upload.run(first.port))
            await until(lambda: (moved / "ready").exists() or sending.done())
            assert not sending.done(), upload.errors
            first.kill()
            with contextlib.suppress(OSError, EOFError):
                await sending
            assert upload.key is not None
            assert upload.durable == 2 * MiB  # told at the end of the second window
            record = await probe.record(upload.key)
            assert (record["state"], int(record["offset"])) == ("finalized", len(data))
            assert not probe.complete(upload.key).exists()

            second = await asyncio.to_thread(spawn_server, *flags, env=env)
            assert await upload.run(second.port), upload.errors
        assert upload.checksum == sha256(data)
        check_reports([upload], lambda _: (moved / str(upload.key)).read_bytes())
        assert upload.reports[-2:] == [(upload.key, len(data))] * 2  # the grant, the result
        record = await probe.record(upload.key)
        assert record["state"] == "complete"
        assert record["result_payload"] == f'{{"moved":"{upload.key}","attempt":2}}'
    finally:
        await probe.close()


@pytest.mark.parametrize("client", ["resumes", "never-returns"])
async def test_a_stream_finalized_before_a_crash_is_no_orphan_record(
    make_server: ServerFactory, connect: Connect, redis_url: str, tmp_path: Path, client: str
) -> None:
    """A crash after the part became the finished file, before the record said so: the
    record has no part, but it is no orphan. The sweeper keeps it and a resume completes
    it; if nobody resumes, the file goes when the stream expires."""
    data = os.urandom(70_000)
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with asyncio.timeout(30):
            async with make_server(app=flaky_app(Flaky(failures=0))) as server:
                link = await connect(server.port)
                key, code, _ = await upload(link, data)
                assert code == 0
            # What the crash leaves: the record active, all bytes recorded, no part.
            stream = f"xs:{{{key}}}:stream"
            fields = [f for f in await probe.record(key) if f.startswith("result_")]
            await probe.redis.hdel(stream, *fields, "sha256", "attempts")
            await probe.redis.hset(stream, "state", "active")
            await probe.redis.zadd(expiry_index_key(key), {key: int(time.time() * 1000) + 60_000})
            assert not probe.part(key).exists()
            async with make_server(app=flaky_app(Flaky(failures=0)), orphan_grace=0) as server:
                assert server.engine is not None
                counts = await server.engine.sweep(now=time.time() + 1)
                assert counts["orphan_records"] == 0
                assert (await probe.record(key))["state"] == "active"
                if client == "never-returns":
                    counts = await server.engine.sweep(now=time.time() + EXPIRY + 1)
                    assert counts["expired"] == 1
                    assert not probe.complete(key).exists()
                    assert await probe.record(key) == {}
                    return
                link = await connect(server.port)
                code, headers, _ = await resume(link, data, key)
            assert code == 0, headers
            assert headers["x-stream-checksum"] == sha256(data)
            assert probe.complete(key).read_bytes() == data
    finally:
        await probe.close()


async def test_a_handler_refusal_is_final_at_once_and_its_file_is_swept(
    make_server: ServerFactory, connect: Connect, redis_url: str, tmp_path: Path
) -> None:
    """``RouteError`` is the handler's answer, not a failure: not run again, repeated to
    every resume; the file the app refused is nobody's and goes when the stream expires."""
    runs: list[int] = []
    app = App()

    @app.stream("/flaky", expiry=EXPIRY)
    async def picky(upload: CompletedUpload) -> Any:
        runs.append(upload.attempt)
        raise RouteError(Status.FORBIDDEN, "not this file")

    data = os.urandom(30_000)
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with asyncio.timeout(30), make_server(app=app) as server:
            assert server.engine is not None
            link = await connect(server.port)
            key, code, headers = await upload(link, data)
            assert (code, headers["message"]) == (403, "not this file")
            code, headers, _ = await resume(link, data, key)
            assert (code, headers["message"]) == (403, "not this file")
            assert runs == [1]
            await server.engine.sweep(now=time.time() + 1)
            assert probe.complete(key).read_bytes() == data
            await server.engine.sweep(now=time.time() + EXPIRY + 1)
            assert not probe.complete(key).exists()
            assert await probe.record(key) == {}
    finally:
        await probe.close()


def test_completion_attempts_must_allow_one_run() -> None:
    with pytest.raises(ValueError, match="completion_attempts"):
        App().stream("/never", completion_attempts=0)
    with pytest.raises(ValueError, match="completion_attempts"):
        StreamRoute("/never", Flaky(0), completion_attempts=0)
