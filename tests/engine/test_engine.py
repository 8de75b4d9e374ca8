"""The stream engine driven with no transport at all, against a real Redis and real files:
create a stream, append at client-stated offsets (as a tus PATCH does), refuse a wrong
offset with 409, ask its status, finish, abandon with a status, read its durable bytes, and
resume after a simulated crash of the process that held it."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from xstream_server import App, CompletedUpload
from xstream_server.engine import (
    Accepted,
    Completion,
    PartCheck,
    Refused,
    StreamEngine,
    StreamStatus,
)
from xstream_server.engine.hashing import BATCH
from xstream_server.protocol import DataFormat, Status, StreamRequest
from xstream_server.settings import ServerSettings
from xstream_server.state import RedisStateStore
from xstream_server.storage import FileStorage

ROUTE = "/files"
KiB = 1024


class Tap:
    """A transport's reading tap, as the engine sees it: the reasons it is paused for."""

    def __init__(self) -> None:
        self.paused: set[str] = set()
        self.resumed = asyncio.Event()

    def pause_reading(self, reason: str) -> None:
        self.paused.add(reason)
        self.resumed.clear()

    def resume_reading(self, reason: str) -> None:
        self.paused.discard(reason)
        if not self.paused:
            self.resumed.set()


def make_app(completed: list[CompletedUpload]) -> App:
    app = App()

    @app.stream(ROUTE, min_buffer=KiB, max_buffer=64 * KiB)
    async def done(upload: CompletedUpload) -> Any:
        completed.append(upload)
        return {"bytes": upload.size}

    return app


EngineFactory = Callable[..., StreamEngine]


@pytest.fixture
async def make_engine(redis_url: str, tmp_path: Path) -> AsyncIterator[EngineFactory]:
    stores: list[RedisStateStore] = []

    def make(app: App, **overrides: Any) -> StreamEngine:
        settings = ServerSettings(
            data_dir=tmp_path, redis_url=redis_url, storage_reserve=0, **overrides
        )
        store = RedisStateStore(
            redis_url, timeout=settings.redis_timeout, lease_seconds=settings.lease_seconds
        )
        stores.append(store)
        storage = FileStorage(tmp_path / "streams", fsync=settings.fsync)
        return StreamEngine(app, store, storage, settings)

    yield make
    for store in stores:
        await store.close()


def request(total: int, key: str | None = None) -> StreamRequest:
    return StreamRequest(ROUTE, None, DataFormat.BYTES, total, 64 * KiB, key=key)


async def append(
    engine: StreamEngine, key: str, total: int, offset: int, data: bytes, *, end: bool = True
) -> Completion | Refused:
    """A tus PATCH: bytes from a stated offset, in pieces; the body ends after ``data``."""
    opened = await engine.open_stream(request(total, key), "client", offset=offset)
    if isinstance(opened, Refused):
        return opened
    if not opened.window:  # nothing left to send: the stream is complete
        return await opened.session.finish()
    window = engine.receive(opened, Tap())
    for start in range(0, len(data), 10 * KiB):
        await window.write(data[start : start + 10 * KiB])
    if window.remaining and end:
        window.body_ended()
    completion = await window.result()
    assert completion is not None
    return completion


async def test_create_append_at_offsets_status_finish_and_read(
    make_engine: EngineFactory,
) -> None:
    completed: list[CompletedUpload] = []
    engine = make_engine(make_app(completed))
    data = os.urandom(300 * KiB + 7)
    created = await engine.create_stream(request(len(data)), "client")
    assert isinstance(created, StreamStatus)
    key = created.key
    assert (created.offset, created.total, created.complete) == (0, len(data), False)

    first = await append(engine, key, len(data), 0, data[: 100 * KiB])
    assert isinstance(first, Completion)
    assert (first.status, first.missing) == (Status.OK, len(data) - 100 * KiB)
    status = await engine.status(key)
    assert isinstance(status, StreamStatus)
    assert status.offset == 100 * KiB  # durable: fsynced and recorded
    assert b"".join([chunk async for chunk in engine.read(key, 10)]) == data[10 : 100 * KiB]

    wrong = await append(engine, key, len(data), 50 * KiB, data[50 * KiB :])
    assert isinstance(wrong, Refused)
    assert wrong.status == Status.CONFLICT
    assert (await engine.status(key)).offset == 100 * KiB  # type: ignore[union-attr]

    last = await append(engine, key, len(data), 100 * KiB, data[100 * KiB :])
    assert isinstance(last, Completion)
    assert (last.status, last.missing) == (Status.OK, 0)
    assert last.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert [upload.key for upload in completed] == [key]
    assert completed[0].path.read_bytes() == data
    final = await engine.status(key)
    assert isinstance(final, StreamStatus)
    assert (final.complete, final.offset) == (True, len(data))
    assert b"".join([chunk async for chunk in engine.read(key)]) == data
    # A complete stream repeats its result; the handler does not run twice.
    again = await append(engine, key, len(data), len(data), b"")
    assert isinstance(again, Completion)
    assert (again.status, again.missing, again.payload) == (Status.OK, 0, last.payload)
    assert len(completed) == 1
    assert not engine.sessions  # every lease let go


@pytest.mark.parametrize("inline_writes", [True, False], ids=["inline", "pooled"])
async def test_window_filled_through_its_buffers_then_abandoned_with_a_status(
    make_engine: EngineFactory, tmp_path: Path, inline_writes: bool
) -> None:
    """The zero-copy path a socket uses: bytes read into ``buffer()``, counted with
    ``received``; a stop (a timeout here) keeps every byte that arrived and answers with the
    status, counting what is missing from the durable offset."""
    engine = make_engine(make_app([]), inline_writes=inline_writes)
    data = os.urandom(200 * KiB)
    opened = await engine.open_stream(request(len(data)), "client")
    assert isinstance(opened, Accepted)
    tap = Tap()
    window = engine.receive(opened, tap)
    sent = 0
    while sent < 150 * KiB + 3:
        target = window.buffer()
        n = min(len(target), 7 * KiB + 1, 150 * KiB + 3 - sent)
        target[:n] = data[sent : sent + n]
        window.received(n)
        sent += n
        if tap.paused:  # storage asked the reader to wait (pooled writes)
            await tap.resumed.wait()
    window.stop(Status.TIMEOUT, "no raw bytes for 1 s")
    completion = await window.result()
    assert completion is not None
    assert completion.status == Status.TIMEOUT
    assert completion.missing == len(data) - sent
    part = tmp_path / "streams" / "parts" / f"{opened.session.key}.part"
    assert part.read_bytes() == data[:sent]
    status = await engine.status(opened.session.key)
    assert isinstance(status, StreamStatus)
    assert status.offset == sent


async def test_resume_after_a_simulated_crash_continues_from_the_durable_offset(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    """Process A writes past its last checkpoint and dies (its session never settles, its
    lease is never released). Process B resumes once the lease has run out: the part is cut
    back to the recorded offset and the stream completes with the sha256 of what was sent."""
    data = os.urandom(256 * KiB)
    app = make_app([])
    a = make_engine(app, lease_seconds=0.3, checkpoint_bytes=1024 * KiB)
    opened = await a.open_stream(request(len(data)), "client")
    assert isinstance(opened, Accepted)
    key = opened.session.key
    window = a.receive(opened, Tap())
    await window.write(data[: 64 * KiB])
    await opened.session.checkpoint()  # durable: 64 KiB
    await window.write(data[64 * KiB : 100 * KiB])  # written, never checkpointed
    part = tmp_path / "streams" / "parts" / f"{key}.part"
    assert part.stat().st_size == 100 * KiB
    # A "dies" here. B, a new process on the same Redis and files:
    b = make_engine(app, lease_seconds=0.3)
    status = await b.status(key)
    assert isinstance(status, StreamStatus)
    assert status.offset == 64 * KiB
    wrong = await append(b, key, len(data), 100 * KiB, data[100 * KiB :])
    assert isinstance(wrong, Refused)
    assert wrong.status == Status.CONFLICT  # 100 KiB were never durable
    done = await append(b, key, len(data), 64 * KiB, data[64 * KiB :])
    assert isinstance(done, Completion)
    assert (done.status, done.missing) == (Status.OK, 0)
    assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    finished = await b.status(key)
    assert isinstance(finished, StreamStatus)
    assert finished.complete
    await opened.session.release()  # A's descriptor; its lease is long gone


async def test_unknown_key_and_closed_engine(make_engine: EngineFactory) -> None:
    engine = make_engine(make_app([]))
    unknown = await engine.status("no-such-key")
    assert isinstance(unknown, Refused)
    assert unknown.status == Status.GONE
    gone = await engine.open_stream(request(10, "no-such-key"), "client", offset=0)
    assert isinstance(gone, Refused)
    assert gone.status == Status.GONE
    engine.shut_down()
    refused = await engine.open_stream(request(10), "client")
    assert isinstance(refused, Refused)
    assert refused.status == Status.UNAVAILABLE


async def test_terminate_stops_an_open_window_and_deletes_the_stream(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    """tus termination: a window still receiving is stopped (its client is told 409, as in a
    takeover), then the record and the part are gone and the key answers 410."""
    engine = make_engine(make_app([]))
    opened = await engine.open_stream(request(100 * KiB), "client")
    assert isinstance(opened, Accepted)
    key = opened.session.key
    window = engine.receive(opened, Tap())
    await window.write(os.urandom(10 * KiB))
    assert await engine.terminate(key) is None
    stopped = await window.result()
    assert stopped is not None
    assert stopped.status == Status.CONFLICT
    assert not (tmp_path / "streams" / "parts" / f"{key}.part").exists()
    gone = await engine.status(key)
    assert isinstance(gone, Refused)
    assert gone.status == Status.GONE
    again = await engine.terminate(key)
    assert isinstance(again, Refused)
    assert again.status == Status.GONE
    assert not engine.sessions


async def _checked_append(
    engine: StreamEngine,
    key: str,
    total: int,
    offset: int,
    data: bytes,
    expected: bytes,
    *,
    leave: bool = False,
) -> Completion | None:
    """A tus PATCH with ``Upload-Checksum: sha1 <expected>``; ``leave``: the client goes
    away after the bytes instead of ending its body."""
    opened = await engine.open_stream(request(total, key), "client", offset=offset)
    assert isinstance(opened, Accepted)
    window = engine.receive(opened, Tap(), PartCheck(hashlib.sha1(), expected))
    for start in range(0, len(data), 10 * KiB):
        await window.write(data[start : start + 10 * KiB])
    if window.remaining:
        window.client_gone() if leave else window.body_ended()
    return await window.result()


@pytest.mark.parametrize("inline_writes", [True, False], ids=["inline", "pooled"])
async def test_checked_parts_count_only_when_they_match(
    make_engine: EngineFactory, tmp_path: Path, inline_writes: bool
) -> None:
    """A part with a checksum: a mismatch (or a client that leaves before its end) cuts the
    part off, the offset stays, and the stream's sha256 never saw those bytes; a match
    counts like any part. Checkpoints wait for the verdict (cadence of 1 MiB < part)."""
    engine = make_engine(make_app([]), inline_writes=inline_writes, checkpoint_bytes=1024 * KiB)
    data = os.urandom(3 * 1024 * KiB)
    created = await engine.create_stream(request(len(data)), "client")
    assert isinstance(created, StreamStatus)
    key, part = created.key, tmp_path / "streams" / "parts" / f"{created.key}.part"
    first = data[: 1536 * KiB]
    good = hashlib.sha1(first).digest()

    bad = await _checked_append(engine, key, len(data), 0, first, b"\0" * 20)
    assert bad is not None
    assert (bad.status, bad.missing) == (Status.CHECKSUM_MISMATCH, len(data))
    assert part.stat().st_size == 0
    assert (await engine.status(key)).offset == 0  # type: ignore[union-attr]

    left = await _checked_append(engine, key, len(data), 0, first[:100], good, leave=True)
    assert left is None
    assert part.stat().st_size == 0
    assert (await engine.status(key)).offset == 0  # type: ignore[union-attr]

    ok = await _checked_append(engine, key, len(data), 0, first, good)
    assert ok is not None
    assert (ok.status, ok.missing) == (Status.OK, len(data) - len(first))
    assert (await engine.status(key)).offset == len(first)  # type: ignore[union-attr]

    rest = data[len(first) :]
    wrong = await _checked_append(engine, key, len(data), len(first), rest, b"\1" * 20)
    assert wrong is not None
    assert wrong.status == Status.CHECKSUM_MISMATCH
    assert part.stat().st_size == len(first)
    last = await _checked_append(
        engine, key, len(data), len(first), rest, hashlib.sha1(rest).digest()
    )
    assert last is not None
    assert (last.status, last.missing) == (Status.OK, 0)
    assert last.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert not engine.sessions


async def test_deferred_length(make_engine: EngineFactory) -> None:
    """tus creation-defer-length: a stream whose length is said later. Windows are kept to
    what the client has (``at_most``), the length cannot go below the offset nor change
    once said, and the stream completes with the sha256 of its bytes."""
    completed: list[CompletedUpload] = []
    engine = make_engine(make_app(completed))
    data = os.urandom(150 * KiB)
    bound = 1 << 40  # the route's max_size: the most a deferred stream may hold
    created = await engine.create_stream(request(bound), "client", length_deferred=True)
    assert isinstance(created, StreamStatus)
    assert created.length_deferred
    key = created.key

    opened = await engine.open_stream(request(bound, key), "client", offset=0, at_most=100 * KiB)
    assert isinstance(opened, Accepted)
    assert opened.window == 100 * KiB
    window = engine.receive(opened, Tap())
    await window.write(data[: 100 * KiB])
    first = await window.result()
    assert first is not None
    assert first.status == Status.OK

    short = await engine.set_length(key, 99 * KiB)
    assert isinstance(short, Refused)
    assert short.status == Status.CONFLICT
    too_big = await engine.set_length(key, bound + 1)
    assert isinstance(too_big, Refused)
    assert too_big.status == Status.TOO_LARGE
    fixed = await engine.set_length(key, len(data))
    assert isinstance(fixed, StreamStatus)
    assert (fixed.total, fixed.offset, fixed.length_deferred) == (len(data), 100 * KiB, False)
    assert isinstance(await engine.set_length(key, len(data)), StreamStatus)  # same: fine
    changed = await engine.set_length(key, len(data) + 1)
    assert isinstance(changed, Refused)
    assert changed.status == Status.CONFLICT

    last = await append(engine, key, len(data), 100 * KiB, data[100 * KiB :])
    assert isinstance(last, Completion)
    assert (last.status, last.missing) == (Status.OK, 0)
    assert last.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert completed[0].size == len(data)


async def test_concatenation_of_partial_streams(make_engine: EngineFactory) -> None:
    """tus concatenation: partial streams complete without running the handler; a final
    stream made of them (through windows smaller than it) runs it once, with the sha256 of
    the parts end to end; incomplete or non-partial parts are refused."""
    completed: list[CompletedUpload] = []
    app = App()

    @app.stream(ROUTE, min_buffer=KiB, max_buffer=64 * KiB, max_window=70 * KiB)
    async def done(upload: CompletedUpload) -> Any:
        completed.append(upload)
        return {"bytes": upload.size}

    engine = make_engine(app)
    pieces = [os.urandom(n) for n in (100 * KiB, 1, 60 * KiB + 3)]
    keys = []
    for piece in pieces:
        created = await engine.create_stream(request(len(piece)), "client", partial=True)
        assert isinstance(created, StreamStatus)
        assert created.partial
        offset = 0
        while offset < len(piece):  # windows of at most 70 KiB
            opened = await engine.open_stream(
                request(len(piece), created.key), "client", offset=offset
            )
            assert isinstance(opened, Accepted)
            window = engine.receive(opened, Tap())
            await window.write(piece[offset : offset + opened.window])
            answer = await window.result()
            assert answer is not None
            offset = len(piece) - answer.missing
        keys.append(created.key)
    assert completed == []  # parts are not uploads of their own

    unfinished = await engine.create_stream(request(10), "client", partial=True)
    plain = await engine.create_stream(request(10), "client")
    assert isinstance(unfinished, StreamStatus) and isinstance(plain, StreamStatus)
    refused = await engine.concatenate(request(1), "client", [keys[0], plain.key])
    assert isinstance(refused, Refused)
    assert refused.status == Status.BAD_REQUEST
    # An unfinished part: the final stream waits for it (tus concatenation-unfinished).
    waiting = await engine.concatenate(request(1), "client", [keys[0], unfinished.key])
    assert not isinstance(waiting, Refused)
    assert waiting[1] is None
    assert (waiting[0].total, waiting[0].offset) == (len(pieces[0]) + 10, 0)
    gone = await engine.concatenate(request(1), "client", ["nope"])
    assert isinstance(gone, Refused)
    assert gone.status == Status.GONE

    made = await engine.concatenate(request(1), "client", keys)
    assert not isinstance(made, Refused)
    final, completion = made
    data = b"".join(pieces)
    assert (final.total, final.offset, final.complete) == (len(data), len(data), True)
    assert final.concat == tuple(keys)
    assert completion is not None
    assert completion.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert [upload.key for upload in completed] == [final.key]
    assert completed[0].path.read_bytes() == data
    assert not engine.sessions

    # The unfinished part completes: the final stream waiting for it is poured then.
    tail = os.urandom(10)
    opened = await engine.open_stream(request(10, unfinished.key), "client", offset=0)
    assert isinstance(opened, Accepted)
    window = engine.receive(opened, Tap())
    await window.write(tail)
    assert await window.result() is not None
    await engine.wait_settled(30)
    poured = await engine.status(waiting[0].key)
    assert isinstance(poured, StreamStatus) and poured.complete
    assert [upload.key for upload in completed] == [final.key, poured.key]
    assert completed[1].path.read_bytes() == pieces[0] + tail


@pytest.mark.parametrize("whole_window", [True, False], ids=["fills-window", "body-ends"])
async def test_a_checksum_given_after_the_bytes(
    make_engine: EngineFactory, whole_window: bool
) -> None:
    """``PartCheck.expected`` as a future (an HTTP trailer): the window waits for it once
    its bytes are in; a wrong digest is 460, None (no checksum came) is 400, both with the
    offset unchanged; the right one counts the bytes."""
    engine = make_engine(make_app([]))
    data = os.urandom(64 * KiB)
    created = await engine.create_stream(request(len(data)), "client")
    assert isinstance(created, StreamStatus)
    sent = data if whole_window else data[: 40 * KiB]
    loop = asyncio.get_running_loop()
    for given, status in (
        (hashlib.sha1(b"other").digest(), Status.CHECKSUM_MISMATCH),
        (None, Status.BAD_REQUEST),
        (hashlib.sha1(sent).digest(), Status.OK),
    ):
        opened = await engine.open_stream(request(len(data), created.key), "client", offset=0)
        assert isinstance(opened, Accepted)
        expected: asyncio.Future[bytes | None] = loop.create_future()
        window = engine.receive(opened, Tap(), PartCheck(hashlib.sha1(), expected))
        await window.write(sent)
        if window.remaining:
            window.body_ended()
        settled = loop.create_task(window.result())
        await asyncio.sleep(0)  # the window is settling, and waits for the checksum
        assert not settled.done()
        expected.set_result(given)
        completion = await settled
        assert completion is not None and completion.status == status
        found = await engine.status(created.key)
        assert isinstance(found, StreamStatus)
        assert found.offset == (len(sent) if status == Status.OK else 0)


@pytest.mark.parametrize("inline_writes", [True, False], ids=["inline", "pooled"])
async def test_sha256_trailing_the_writer_covers_every_window(
    make_engine: EngineFactory, inline_writes: bool
) -> None:
    """Windows of several hashing batches (the sha256 trails the writer in its own thread):
    a plain part, a checked part that is refused, a checked part that matches, and a last
    plain part; the completion's sha256 is the one of every byte, in order."""
    MiB = 1024 * KiB
    engine = make_engine(make_app([]), inline_writes=inline_writes, checkpoint_bytes=MiB)
    data = os.urandom(3 * BATCH + 5 * MiB + 7)
    created = await engine.create_stream(request(len(data)), "client")
    assert isinstance(created, StreamStatus)
    key = created.key
    first, second = BATCH + 3 * MiB, 2 * BATCH + 4 * MiB
    plain = await append(engine, key, len(data), 0, data[:first])
    assert isinstance(plain, Completion)
    assert (plain.status, plain.missing) == (Status.OK, len(data) - first)
    part = data[first:second]
    refused = await _checked_append(engine, key, len(data), first, part, b"\0" * 20)
    assert refused is not None and refused.status == Status.CHECKSUM_MISMATCH
    checked = hashlib.sha1(part).digest()
    matched = await _checked_append(engine, key, len(data), first, part, checked)
    assert matched is not None
    assert (matched.status, matched.missing) == (Status.OK, len(data) - second)
    last = await append(engine, key, len(data), second, data[second:])
    assert isinstance(last, Completion)
    assert (last.status, last.missing) == (Status.OK, 0)
    assert last.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert not engine.sessions


@pytest.mark.parametrize("inline_writes", [True, False], ids=["inline", "pooled"])
async def test_a_window_that_goes_quiet_gets_its_written_bytes_recorded(
    make_engine: EngineFactory, inline_writes: bool
) -> None:
    """A burst that passes the byte cadence while a background checkpoint runs, then
    silence: the written bytes are recorded within ``checkpoint_seconds``, while the window
    is still open, not only when it is abandoned at the stall timeout."""
    MiB = 1024 * KiB
    engine = make_engine(
        make_app([]), inline_writes=inline_writes, checkpoint_bytes=MiB, checkpoint_seconds=0.3
    )
    data = os.urandom(4 * MiB)
    sent = 2 * MiB + 1000
    opened = await engine.open_stream(request(len(data)), "client")
    assert isinstance(opened, Accepted)
    window = engine.receive(opened, Tap())
    for start in range(0, sent, 64 * KiB):
        await window.write(data[start : min(start + 64 * KiB, sent)])
    key = opened.session.key
    recorded = 0
    async with asyncio.timeout(10):  # the window itself would wait for its stall timeout
        while recorded < sent:
            status = await engine.status(key)
            assert isinstance(status, StreamStatus)
            recorded = status.offset
            await asyncio.sleep(0.05)  # polling the store: it has no change notification
    assert recorded == sent
    assert window.remaining  # still open: the checkpoint came from the quiet window itself
    window.stop(Status.TIMEOUT, "test over")
    completion = await window.result()
    assert completion is not None
    assert completion.missing == len(data) - sent


async def test_the_part_is_fsynced_ahead_between_checkpoints_without_recording(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``SYNC_AHEAD`` bytes the part is fsynced in the background (so that the
    checkpoint's and the completion's fsync have only the tail left), but nothing is
    recorded before a checkpoint: the recorded offset stays where it was until then."""
    from xstream_server.engine.session import SYNC_AHEAD
    from xstream_server.storage import files

    fsynced: list[int] = []
    real_fsync = files._fdatasync

    async def counting_fsync(fd: int) -> None:  # the real fsync, counted
        await real_fsync(fd)
        fsynced.append(fd)

    monkeypatch.setattr(files, "_fdatasync", counting_fsync)
    engine = make_engine(make_app([]), checkpoint_bytes=64 * SYNC_AHEAD, checkpoint_seconds=600)
    data = os.urandom(2 * SYNC_AHEAD + 5)
    opened = await engine.open_stream(request(len(data)), "client")
    assert isinstance(opened, Accepted)
    session = opened.session
    window = engine.receive(opened, Tap())
    sent = SYNC_AHEAD
    for start in range(0, sent, 64 * KiB):
        await window.write(data[start : min(start + 64 * KiB, sent)])
    running = session._checkpointing  # the fsync ahead the last write started
    assert running is not None
    await running
    assert session.synced == sent and len(fsynced) == 1
    status = await engine.status(session.key)
    assert isinstance(status, StreamStatus) and status.offset == 0  # fsynced, not recorded
    for start in range(sent, len(data), 64 * KiB):
        await window.write(data[start : start + 64 * KiB])
    completion = await window.result()
    assert completion is not None and (completion.status, completion.missing) == (Status.OK, 0)
    assert completion.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    # One more fsync ahead at 2 × SYNC_AHEAD, one for the tail before the completion, and
    # the finished file's folders: never fewer than 3 of the part itself.
    assert len(fsynced) >= 3


async def test_no_fsync_ahead_without_fsync(make_engine: EngineFactory) -> None:
    """With fsync off (``--no-fsync``) the session starts no fsync ahead at all."""
    from xstream_server.engine.session import SYNC_AHEAD

    engine = make_engine(make_app([]), fsync=False, checkpoint_bytes=64 * SYNC_AHEAD)
    data = os.urandom(SYNC_AHEAD + 1)
    opened = await engine.open_stream(request(len(data) + 1), "client")
    assert isinstance(opened, Accepted)
    window = engine.receive(opened, Tap())
    for start in range(0, len(data), 64 * KiB):
        await window.write(data[start : start + 64 * KiB])
    assert opened.session._checkpointing is None
    window.stop(Status.TIMEOUT, "test over")
    completion = await window.result()
    assert completion is not None and completion.missing == 1


async def test_inline_reads_take_the_whole_shared_buffer(make_engine: EngineFactory) -> None:
    """An inline window reads with the whole shared buffer (the largest B2 a route grants:
    64 KiB here), whatever B2 it was granted (4 KiB), and never past its own end."""
    engine = make_engine(make_app([]))
    data = os.urandom(100 * KiB + 5)
    small = StreamRequest(ROUTE, None, DataFormat.BYTES, len(data), 4 * KiB)
    opened = await engine.open_stream(small, "client")
    assert isinstance(opened, Accepted) and opened.buffer_size == 4 * KiB
    tap = Tap()
    window = engine.receive(opened, tap)
    sizes = []
    sent = 0
    while sent < len(data):
        target = window.buffer()
        sizes.append(len(target))
        target[:] = data[sent : sent + len(target)]
        window.received(len(target))
        sent += len(target)
        assert not tap.paused  # inline writes never hold the reader
    expected = 64 * KiB
    assert sizes[0] == expected and max(sizes) == expected
    assert sent == len(data) and sizes[-1] == (len(data) - 1) % expected + 1
    completion = await window.result()
    assert completion is not None and (completion.status, completion.missing) == (Status.OK, 0)
    assert completion.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
