"""Many streams finishing at once share their folder fsyncs and their Redis trips (group
commit): still, every stream whose completion was reported has its file in its final
place with all its bytes, no part left behind, and its completion recorded; and a shared
folder fsync covers only the renames made before it started."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from tests.conftest import ServerFactory
from tests.durability.conftest import Connect
from tests.durability.support import StateProbe, sha256, status
from xstream_server import App, CompletedUpload
from xstream_server.state import RedisStateStore, StoredResult, StreamRecord
from xstream_server.storage.files import FolderSync

STREAMS = 48


def seen_app(seen: dict[str, bytes]) -> App:
    """A route whose handler notes what the finished file holds when it runs."""
    app = App()

    @app.stream("/many")
    async def done(upload: CompletedUpload) -> Any:
        seen[upload.key] = upload.path.read_bytes()
        return {"ok": True}

    return app


async def test_every_reported_completion_of_many_at_once_is_in_place_and_recorded(
    make_server: ServerFactory, connect: Connect, redis_url: str, tmp_path: Path
) -> None:
    seen: dict[str, bytes] = {}
    probe = StateProbe(redis_url, tmp_path / "data")
    bodies = [os.urandom(32 * 1024 + n) for n in range(STREAMS)]
    try:
        async with asyncio.timeout(60), make_server(app=seen_app(seen)) as server:
            links = [await connect(server.port) for _ in bodies]
            accepts = await asyncio.gather(
                *(
                    link.request({"route": "/many", "x-stream": f"{len(body)}:65536"})
                    for link, body in zip(links, bodies, strict=True)
                )
            )
            assert all(status(accept) == 0 for accept in accepts)
            keys = [accept.headers["x-stream-key"] for accept in accepts]
            # Every body at once, so that the completions meet in the folder fsyncs and the
            # Redis batches.
            for link, body in zip(links, bodies, strict=True):
                await link.send_raw(body)
            done = await asyncio.gather(*(link.receive() for link in links))
            for key, body, packet in zip(keys, bodies, done, strict=True):
                assert status(packet) == 0, packet.headers
                assert packet.headers["x-stream-checksum"] == sha256(body)
                # Reported: in its final place, whole, no part left; recorded complete.
                assert probe.complete(key).read_bytes() == body
                assert not probe.part(key).exists()
                assert seen[key] == body
                record = await probe.record(key)
                assert record["state"] == "complete"
                assert int(record["offset"]) == len(body)
                assert record["sha256"] == sha256(body).removeprefix("sha256:")
    finally:
        await probe.close()


async def test_a_shared_folder_fsync_covers_only_what_was_renamed_before_it_started(
    tmp_path: Path,
) -> None:
    """Each ``sync()`` returns after an fsync that started after it was called; callers
    that come while one runs share the next one."""
    runs: list[tuple[int, int]] = []  # (calls made when the fsync started, when it ended)
    calls = 0
    gate = asyncio.Event()

    async def run(folders: tuple[Path, ...]) -> None:
        started = calls
        await gate.wait()
        for folder in folders:  # the real thing, after the gate
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        runs.append((started, calls))

    folders = FolderSync(tmp_path, run=run)
    covered: list[bool] = []

    async def caller() -> None:
        nonlocal calls
        calls += 1
        mine = calls
        await folders.sync()
        # Some fsync that has ended started after this call.
        covered.append(any(started >= mine for started, _ in runs))

    first = asyncio.ensure_future(caller())
    await asyncio.sleep(0)  # the first fsync starts, and waits at the gate
    await asyncio.sleep(0)
    others = [asyncio.ensure_future(caller()) for _ in range(STREAMS - 1)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, *others)
    assert covered == [True] * STREAMS
    # One fsync for the first caller, one shared by all who came while it ran.
    assert len(runs) == 2
    # A later caller gets an fsync of its own, after those.
    await caller()
    assert covered[-1] and len(runs) == 3


async def test_a_failed_shared_fsync_fails_every_caller_that_shared_it(tmp_path: Path) -> None:
    async def broken(folders: tuple[Path, ...]) -> None:
        raise OSError(5, "input/output error")

    folders = FolderSync(tmp_path, run=broken)
    results = await asyncio.gather(*(folders.sync() for _ in range(8)), return_exceptions=True)
    assert all(isinstance(result, OSError) for result in results)


def _record(key: str) -> StreamRecord:
    now = time.time()
    return StreamRecord(
        key=key,
        route="/upload-file",
        total=10,
        offset=0,
        buffer_size=10,
        data_format="bytes",
        created=now,
        updated=now,
        expiry=60.0,
    )


async def test_redis_calls_of_many_streams_in_one_turn_each_get_their_own_answer(
    redis_url: str,
) -> None:
    """Creations, checkpoints, finalizations and completions of many streams asked for in
    the same turn of the event loop go to Redis together; each is applied and answered as
    if alone, a lease owner mismatch included, and a script Redis forgot (SCRIPT FLUSH, as
    after a restart) is loaded again."""
    store = RedisStateStore(redis_url)
    raw = aioredis.Redis.from_url(redis_url)
    keys = [f"batch{n}-{os.urandom(4).hex()}" for n in range(STREAMS)]
    try:
        await asyncio.gather(*(store.create(_record(key), f"owner-{key}") for key in keys))
        await raw.script_flush()
        await asyncio.gather(*(store.checkpoint(key, f"owner-{key}", 5) for key in keys))
        # One caller is not the owner: only it fails.
        outcomes = await asyncio.gather(
            *(
                store.finalize(key, "someone else" if n == 3 else f"owner-{key}", "ab" * 32)
                for n, key in enumerate(keys)
            ),
            return_exceptions=True,
        )
        assert [type(o).__name__ for o in outcomes] == [
            "LeaseLost" if n == 3 else "int" for n in range(STREAMS)
        ]
        result = StoredResult(0, {}, b"", "bytes")
        await raw.script_flush()
        await asyncio.gather(
            *(store.complete(key, f"owner-{key}", result) for n, key in enumerate(keys) if n != 3)
        )
        for n, key in enumerate(keys):
            record = await store.get(key)
            assert record is not None
            assert record.state.value == ("active" if n == 3 else "complete")
            assert record.offset == (5 if n == 3 else 10)
        assert set(keys) <= set(await store.active_keys())
    finally:
        for key in keys:
            await store.delete(key)
        await raw.aclose()
        await store.close()


async def test_taking_a_lease_reads_the_record_under_it_in_the_same_trip(redis_url: str) -> None:
    """A resume takes the lease and reads the record as it is under that lease (one trip):
    a lease held by another gives its owner and no record; a free one, the record; a lease
    on a stream with no record, no record."""
    store = RedisStateStore(redis_url)
    key = f"take-{os.urandom(4).hex()}"
    try:
        await store.create(_record(key), "first")
        assert await store.acquire_lease_and_get(key, "second", 5.0) == ("first", None)
        await store.checkpoint(key, "first", 7)
        await store.release_lease(key, "first")
        holder, record = await store.acquire_lease_and_get(key, "second", 5.0)
        assert holder is None and record is not None
        assert (record.key, record.offset, record.total) == (key, 7, 10)
        await store.checkpoint(key, "second", 9)  # the lease is the second's now
        await store.delete(key)
        assert await store.acquire_lease_and_get(key, "third", 5.0) == (None, None)
    finally:
        await store.delete(key)
        await store.close()
