"""End to end over real sockets, real Redis and real files: stream negotiation, raw bytes,
completion, partial grants, resume and its refusals, and the statuses streams can get."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.conftest import ServerFactory
from tests.wire import Wire, status
from xstream_server import App, CompletedUpload, RouteError, Status
from xstream_server.server import Server

MiB = 1024 * 1024


async def upload_window(wire: Wire, data: bytes, offset: int, window: int) -> None:
    await wire.send_raw(memoryview(data)[offset : offset + window])


def grant(reply: Any, total: int) -> tuple[int, int]:
    """(offset, window) of an accept reply."""
    capacity, _, _ = reply.headers["x-stream"].partition(":")
    offset = int(reply.headers["x-stream-offset"])
    return offset, (total - offset if capacity == "0" else int(capacity))


@pytest.mark.parametrize("inline_writes", [True, False], ids=["inline", "pooled"])
async def test_upload_completes_with_checksum_and_stored_file(
    make_server: ServerFactory, inline_writes: bool
) -> None:
    data = os.urandom(3 * MiB + 17)
    async with (
        make_server(inline_writes=inline_writes) as server,
        await Wire.connect(server.port) as wire,
    ):
        accept = await wire.request(
            {"route": "/upload-file", "x-stream": f"{len(data)}:65536", "name": "../../etc/x"}
        )
        assert status(accept) == 0
        assert accept.headers["x-stream"] == "0:65536"
        assert accept.headers["x-stream-offset"] == "0"
        assert accept.headers["data-format"] == "bytes"
        key = accept.headers["x-stream-key"]
        assert len(key) >= 22
        await wire.send_raw(data)
        done = await wire.receive()
    digest = hashlib.sha256(data).hexdigest()
    assert status(done) == 0
    assert done.headers["x-stream"] == "0:0"
    assert done.headers["x-stream-key"] == key
    assert done.headers["x-stream-checksum"] == f"sha256:{digest}"
    result = json.loads(done.payload)
    assert result == {"key": key, "size": len(data), "sha256": digest, "name": "../../etc/x"}
    stored = server.settings.data_dir / "streams" / "complete" / key
    assert stored.read_bytes() == data
    assert not (server.settings.data_dir.parent / "etc").exists()


async def test_buffer_size_is_clamped_into_route_bounds(server: Server) -> None:
    async with await Wire.connect(server.port) as wire:
        small = await wire.request({"route": "/upload-file", "x-stream": "1:1"})
        assert small.headers["x-stream"] == "0:65536"
        await wire.send_raw(b"x")
        assert status(await wire.receive()) == 0
        big = await wire.request({"route": "/upload-file", "x-stream": f"1:{1 << 30}"})
        assert big.headers["x-stream"] == f"0:{MiB}"


async def test_partial_grants_followed_to_completion(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XSTREAM_UPLOAD_WINDOW", str(MiB))
    data = os.urandom(3 * MiB + MiB // 2)
    windows = []
    async with make_server() as running, await Wire.connect(running.port) as wire:
        reply = await wire.request({"route": "/upload-file", "x-stream": f"{len(data)}:65536"})
        key = reply.headers["x-stream-key"]
        while True:
            assert status(reply) == 0
            offset, window = grant(reply, len(data))
            windows.append((reply.headers["x-stream"], offset))
            await upload_window(wire, data, offset, window)
            done = await wire.receive()
            assert status(done) == 0
            missing = int(done.headers["x-stream"].partition(":")[0])
            assert missing == len(data) - offset - window
            if missing == 0:
                break
            reply = await wire.request(
                {"route": "/upload-file", "x-stream": f"{len(data)}:65536", "x-stream-key": key}
            )
    assert windows == [
        (f"{MiB}:65536", 0),
        (f"{MiB}:65536", MiB),
        (f"{MiB}:65536", 2 * MiB),
        ("0:65536", 3 * MiB),
    ]
    assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"


async def test_large_upload_sha256_matches(server: Server) -> None:
    block = os.urandom(MiB)
    total = 256 * MiB
    expected = hashlib.sha256()
    async with await Wire.connect(server.port) as wire:
        accept = await wire.request({"route": "/upload-file", "x-stream": f"{total}:{MiB}"})
        key = accept.headers["x-stream-key"]
        for i in range(total // MiB):
            chunk = bytes([i % 256]) + block[1:]
            expected.update(chunk)
            await wire.send_raw(chunk)
        done = await wire.receive(timeout=120)
    assert status(done) == 0
    assert done.headers["x-stream"] == "0:0"
    assert done.headers["x-stream-checksum"] == f"sha256:{expected.hexdigest()}"
    stored = server.settings.data_dir / "streams" / "complete" / key
    digest = hashlib.sha256()
    with stored.open("rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    assert digest.hexdigest() == expected.hexdigest()


async def test_stream_over_route_limit_gets_413(make_server: ServerFactory) -> None:
    app = App()

    @app.stream("/tiny", max_size=100)
    async def tiny(upload: CompletedUpload) -> Any:
        return None

    async with make_server(app=app) as running, await Wire.connect(running.port) as wire:
        reply = await wire.request({"route": "/tiny", "x-stream": "101:10"})
        assert status(reply) == 413
        assert reply.headers["x-stream"] == "-1"
        ok = await wire.request({"route": "/tiny", "x-stream": "100:10"})
        assert status(ok) == 0


async def test_no_free_space_gets_507(make_server: ServerFactory) -> None:
    async with (
        make_server(storage_reserve=1 << 62) as server,
        await Wire.connect(server.port) as wire,
    ):
        reply = await wire.request({"route": "/upload-file", "x-stream": "10:10"})
        assert status(reply) == 507
        assert reply.headers["x-stream"] == "-1"


async def test_stalled_raw_bytes_get_408_with_bytes_missing(make_server: ServerFactory) -> None:
    async with (
        make_server(raw_stall_timeout=0.3) as running,
        await Wire.connect(running.port) as wire,
    ):
        accept = await wire.request({"route": "/upload-file", "x-stream": "1000:64"})
        await wire.send_raw(b"a" * 400)
        reply = await wire.receive(timeout=10)
        assert status(reply) == 408
        assert reply.headers["x-stream"] == "600:0"
        assert reply.headers["x-stream-key"] == accept.headers["x-stream-key"]
        assert await wire.closed_by_server()
        # The 400 bytes are durable: a resume starts after them.
    async with (
        make_server(raw_stall_timeout=0.3) as running,
        await Wire.connect(running.port) as wire,
    ):
        resume = await wire.request(
            {
                "route": "/upload-file",
                "x-stream": "1000:64",
                "x-stream-key": accept.headers["x-stream-key"],
            }
        )
        assert status(resume) == 0
        assert resume.headers["x-stream-offset"] == "400"


async def test_completion_handler_error_gets_500(make_server: ServerFactory) -> None:
    app = App()

    # One run only: its failure is final at once (with more, it is 503 until the last run;
    # see tests/durability/test_completion_retry.py).
    @app.stream("/fragile", completion_attempts=1)
    async def fragile(upload: CompletedUpload) -> Any:
        raise RuntimeError("handler bug")

    @app.stream("/picky")
    async def picky(upload: CompletedUpload) -> Any:
        raise RouteError(Status.FORBIDDEN, "not this file")

    async with make_server(app=app) as running, await Wire.connect(running.port) as wire:
        await wire.request({"route": "/fragile", "x-stream": "5:5"})
        await wire.send_raw(b"hello")
        done = await wire.receive()
        assert status(done) == 500
        assert done.headers["x-stream"] == "0:0"
        await wire.request({"route": "/picky", "x-stream": "5:5"})
        await wire.send_raw(b"hello")
        refused = await wire.receive()
        assert status(refused) == 403
        assert refused.headers["message"] == "not this file"


async def test_json_stream_is_decoded_for_the_handler(make_server: ServerFactory) -> None:
    app = App()
    seen: list[Any] = []

    @app.stream("/doc")
    async def doc(upload: CompletedUpload) -> Any:
        seen.append(upload.content)
        return {"items": len(upload.content)}

    body = json.dumps(list(range(1000))).encode()
    async with make_server(app=app) as running, await Wire.connect(running.port) as wire:
        accept = await wire.request(
            {"route": "/doc", "x-stream": f"{len(body)}:4096", "data-format": "json"}
        )
        assert accept.headers["data-format"] == "json"
        await wire.send_raw(body)
        done = await wire.receive()
        assert status(done) == 0
        assert json.loads(done.payload) == {"items": 1000}
        await wire.request({"route": "/doc", "x-stream": "3:4096", "data-format": "json"})
        await wire.send_raw(b"{x}")
        assert status(await wire.receive()) == 400
    assert seen == [list(range(1000))]


async def test_resume_refusals_409_410(server: Server) -> None:
    async with await Wire.connect(server.port) as wire:
        accept = await wire.request({"route": "/upload-file", "x-stream": "100:10"})
        key = accept.headers["x-stream-key"]
        await wire.send_raw(b"x" * 100)
        assert status(await wire.receive()) == 0
        unknown = await wire.request(
            {"route": "/upload-file", "x-stream": "100:10", "x-stream-key": "A" * 24}
        )
        assert status(unknown) == 410
        assert unknown.headers["x-stream"] == "-1"
        other_total = await wire.request(
            {"route": "/upload-file", "x-stream": "99:10", "x-stream-key": key}
        )
        assert status(other_total) == 409


async def test_resume_on_other_route_gets_409(make_server: ServerFactory) -> None:
    app = App()

    @app.stream("/a")
    async def a(upload: CompletedUpload) -> Any:
        return None

    @app.stream("/b")
    async def b(upload: CompletedUpload) -> Any:
        return None

    async with make_server(app=app) as running, await Wire.connect(running.port) as wire:
        key = (await wire.request({"route": "/a", "x-stream": "10:10"})).headers["x-stream-key"]
        await wire.send_raw(b"0123456789")
        await wire.receive()
        assert (
            status(await wire.request({"route": "/b", "x-stream": "10:10", "x-stream-key": key}))
            == 409
        )


async def test_resume_of_complete_stream_repeats_completion(server: Server) -> None:
    async with await Wire.connect(server.port) as wire:
        key = (await wire.request({"route": "/upload-file", "x-stream": "6:6"})).headers[
            "x-stream-key"
        ]
        await wire.send_raw(b"abcdef")
        first = await wire.receive()
    async with await Wire.connect(server.port) as wire:
        again = await wire.request(
            {"route": "/upload-file", "x-stream": "6:6", "x-stream-key": key}
        )
        assert status(again) == 0
        assert again.headers["x-stream-offset"] == "6"
        repeat = await wire.receive()
    assert repeat.headers == first.headers
    assert repeat.payload == first.payload


async def test_checksum_mismatch_gets_460_and_discards(server: Server) -> None:
    data = b"some bytes to check"
    wrong = hashlib.sha256(b"other").hexdigest()
    async with await Wire.connect(server.port) as wire:
        accept = await wire.request(
            {
                "route": "/upload-file",
                "x-stream": f"{len(data)}:64",
                "x-stream-checksum": f"sha256:{wrong}",
            }
        )
        key = accept.headers["x-stream-key"]
        await wire.send_raw(data)
        done = await wire.receive()
        assert status(done) == 460
        assert done.headers["x-stream"] == f"{len(data)}:0"
        gone = await wire.request(
            {"route": "/upload-file", "x-stream": f"{len(data)}:64", "x-stream-key": key}
        )
        assert status(gone) == 410
        right = hashlib.sha256(data).hexdigest()
        accept = await wire.request(
            {
                "route": "/upload-file",
                "x-stream": f"{len(data)}:64",
                "x-stream-checksum": f"sha256:{right}",
            }
        )
        await wire.send_raw(data)
        assert status(await wire.receive()) == 0
    assert not list((server.settings.data_dir / "streams" / "parts").iterdir())


async def test_resume_by_another_principal_gets_403(make_server: ServerFactory) -> None:
    async def users(credential: str | None) -> str | None:
        if credential not in ("alice", "bob"):
            raise RouteError(Status.UNAUTHORIZED, "who are you?")
        return credential

    app = App()

    @app.stream("/private", auth=users)
    async def private(upload: CompletedUpload) -> Any:
        return None

    async with make_server(app=app) as running, await Wire.connect(running.port) as wire:
        anonymous = await wire.request({"route": "/private", "x-stream": "10:10"})
        assert status(anonymous) == 401
        assert anonymous.headers["x-stream"] == "-1"
        accept = await wire.request(
            {"route": "/private", "x-stream": "10:10", "authorization": "alice"}
        )
        await wire.send_raw(b"01234")
        await wire.close()
    async with make_server(app=app) as running, await Wire.connect(running.port) as wire:
        key = accept.headers["x-stream-key"]
        bob = await wire.request(
            {"route": "/private", "x-stream": "10:10", "authorization": "bob", "x-stream-key": key}
        )
        assert status(bob) == 403
        alice = await wire.request(
            {
                "route": "/private",
                "x-stream": "10:10",
                "authorization": "alice",
                "x-stream-key": key,
            }
        )
        assert status(alice) == 0
        assert alice.headers["x-stream-offset"] == "5"


async def test_too_many_streams_from_one_client_gets_429(make_server: ServerFactory) -> None:
    async with make_server(max_streams_per_client=1) as running:
        async with (
            await Wire.connect(running.port) as first,
            await Wire.connect(running.port) as second,
        ):
            assert status(await first.request({"route": "/upload-file", "x-stream": "10:10"})) == 0
            busy = await second.request({"route": "/upload-file", "x-stream": "10:10"})
            assert status(busy) == 429
            assert busy.headers["x-stream"] == "-1"
            await first.send_raw(b"0123456789")
            assert status(await first.receive()) == 0
            assert status(await second.request({"route": "/upload-file", "x-stream": "10:10"})) == 0


async def test_redis_unreachable_gets_503_and_requests_still_work(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    async with make_server(redis_url="redis://127.0.0.1:1/0", redis_timeout=0.5) as running:
        async with await Wire.connect(running.port) as wire:
            reply = await wire.request({"route": "/upload-file", "x-stream": "10:10"})
            assert status(reply) == 503
            assert reply.headers["x-stream"] == "-1"
            echo = await wire.request({"route": "/echo", "data-format": "json"}, b"1")
            assert status(echo) == 0


async def test_newer_request_takes_over_a_stalled_connection(
    server: Server, redis_url: str
) -> None:
    data = os.urandom(200_000)
    async with await Wire.connect(server.port) as old:
        accept = await old.request({"route": "/upload-file", "x-stream": f"{len(data)}:65536"})
        key = accept.headers["x-stream-key"]
        await old.send_raw(data[:100_000])
        # The old client now stalls with its socket open; a new connection resumes.
        async with await Wire.connect(server.port) as new:
            resume = await new.request(
                {"route": "/upload-file", "x-stream": f"{len(data)}:65536", "x-stream-key": key}
            )
            assert status(resume) == 0
            offset = int(resume.headers["x-stream-offset"])
            assert offset == 100_000
            superseded = await old.receive()
            assert status(superseded) == 409
            assert superseded.headers["x-stream"] == f"{len(data) - offset}:0"
            await new.send_raw(data[offset:])
            done = await new.receive()
    assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    client = aioredis.Redis.from_url(redis_url)
    assert await client.hget(f"xs:{{{key}}}:stream", "state") == b"complete"
    await client.aclose()


async def test_client_drop_keeps_durable_prefix_for_resume(server: Server) -> None:
    data = os.urandom(500_000)
    wire = await Wire.connect(server.port)
    accept = await wire.request({"route": "/upload-file", "x-stream": f"{len(data)}:65536"})
    key = accept.headers["x-stream-key"]
    await wire.send_raw(data[:300_000])
    await wire.close()
    async with await Wire.connect(server.port) as again:
        resume = await again.request(
            {"route": "/upload-file", "x-stream": f"{len(data)}:65536", "x-stream-key": key}
        )
        offset = int(resume.headers["x-stream-offset"])
        assert 0 < offset <= 300_000
        await again.send_raw(data[offset:])
        done = await again.receive()
    assert status(done) == 0
    assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"


async def test_shutdown_answers_503_with_bytes_missing(make_server: ServerFactory) -> None:
    async with make_server() as running:
        wire = await Wire.connect(running.port)
        await wire.request({"route": "/upload-file", "x-stream": "1000000:65536"})
        await wire.send_raw(b"z" * 100_000)
        closing = asyncio.get_running_loop().create_task(running.close())
        reply = await wire.receive()
        await closing
        assert status(reply) == 503
        missing = int(reply.headers["x-stream"].partition(":")[0])
        assert 900_000 <= missing < 1_000_000
        await wire.close()


async def test_crash_between_finalize_and_record_completes_on_resume(
    make_server: ServerFactory,
) -> None:
    """The part was renamed into place but the record never heard of it (a crash came in
    between): a resume must complete the stream, not start it again."""
    data = b"0123456789"
    async with make_server() as running, await Wire.connect(running.port) as wire:
        accept = await wire.request({"route": "/upload-file", "x-stream": "10:10"})
        key = accept.headers["x-stream-key"]
        await wire.send_raw(data[:5])
        await wire.close()
        streams = running.settings.data_dir / "streams"
    # The server is down: play the crash's leftovers by hand.
    part = streams / "parts" / f"{key}.part"
    with part.open("ab") as f:
        f.write(data[5:])
    part.rename(streams / "complete" / key)
    # The record still holds the last checkpoint (5): the last window is recorded only by
    # the completion itself.
    async with make_server() as running, await Wire.connect(running.port) as wire:
        resume = await wire.request(
            {"route": "/upload-file", "x-stream": "10:10", "x-stream-key": key}
        )
        assert status(resume) == 0
        assert resume.headers["x-stream-offset"] == "10"
        done = await wire.receive()
    assert status(done) == 0
    assert done.headers["x-stream"] == "0:0"
    assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"


async def test_stream_status_route_reports_durable_offset(server: Server) -> None:
    async with await Wire.connect(server.port) as wire:
        accept = await wire.request({"route": "/upload-file", "x-stream": "100:10"})
        key = accept.headers["x-stream-key"]
        await wire.send_raw(b"x" * 40)
    async with await Wire.connect(server.port) as wire:
        # The first connection's window is settled once its lease is gone; a resume waits
        # for exactly that, so it is the event to wait on before asking for the status.
        resume = await wire.request(
            {"route": "/upload-file", "x-stream": "100:10", "x-stream-key": key}
        )
        assert resume.headers["x-stream-offset"] == "40"
        await wire.send_raw(b"y" * 60)
        assert status(await wire.receive()) == 0
        info = await wire.request(
            {"route": "/stream-status", "data-format": "json"}, json.dumps({"key": key}).encode()
        )
        assert status(info) == 0
        body = json.loads(info.payload)
        assert body["total"] == 100
        assert body["offset"] == 100
        assert body["state"] == "complete"
        assert body["route"] == "/upload-file"
        unknown = await wire.request({"route": "/stream-status"}, b'{"key": "nope"}')
        assert status(unknown) == 410
        bad = await wire.request({"route": "/stream-status"}, b"[]")
        assert status(bad) == 400
