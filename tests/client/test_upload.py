"""Resumable uploads against the real server and real Redis, through a cutting proxy."""

from __future__ import annotations

import asyncio
import inspect
import io
import random
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from xstream_server import App, CompletedUpload
from xstream_server.client import (
    ConnectionFailedError,
    NotResumableError,
    Progress,
    RetryPolicy,
    StreamConflictError,
    StreamGoneError,
    Upload,
    UploadAborted,
    UploadClosed,
    UploadResult,
    UploadSource,
    upload,
    upload_sync,
)
from xstream_server.server import Server

from .conftest import ProxyFactory, RandomFile

MiB = 1024 * 1024
FAST_RETRY = RetryPolicy(max_retries=5, initial_delay=0.001, max_delay=0.01)


def address(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


async def chunks_of(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def check_result(result: UploadResult, size: int, sha256: str, name: str | None) -> None:
    assert result.size == size
    assert result.sha256 == sha256
    assert result.payload == {"key": result.key, "size": size, "sha256": sha256, "name": name}


def assert_monotonic(snapshots: list[Progress], total: int) -> None:
    assert snapshots, "no progress was reported"
    acknowledged = [p.acknowledged for p in snapshots]
    assert acknowledged == sorted(acknowledged)
    assert all(0 <= p.acknowledged <= p.sent <= p.total == total for p in snapshots)
    assert snapshots[-1].acknowledged == total


async def test_upload_from_path(server: Server, random_file: RandomFile) -> None:
    path, digest = random_file(3 * MiB + 17)
    result = await upload(path, server=address(server))
    check_result(result, 3 * MiB + 17, digest, path.name)
    assert (result.windows, result.reconnects, result.resumed_from) == (1, 0, 0)


@pytest.mark.parametrize("kind", ["file-object", "bytes-io", "async-iterator"])
async def test_upload_from_other_sources(
    server: Server, random_file: RandomFile, kind: str
) -> None:
    path, digest = random_file(2 * MiB + 5)
    data = path.read_bytes()
    source: UploadSource
    total = None
    if kind == "file-object":
        source = open(path, "rb")  # noqa: SIM115, ASYNC230 — closed below
    elif kind == "bytes-io":
        source = io.BytesIO(data)
    else:
        source, total = chunks_of(data), len(data)
    try:
        result = await upload(source, server=address(server), total=total, name="n.bin")
    finally:
        if isinstance(source, io.IOBase):
            source.close()
    check_result(result, len(data), digest, "n.bin")


async def test_partial_grants_are_followed_window_by_window(
    server: Server, random_file: RandomFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XSTREAM_UPLOAD_WINDOW", str(MiB))
    path, digest = random_file(5 * MiB + MiB // 2)
    snapshots: list[Progress] = []
    result = await upload(path, server=address(server), on_progress=snapshots.append)
    check_result(result, 5 * MiB + MiB // 2, digest, path.name)
    assert result.windows == 6
    assert result.reconnects == 0
    confirmed = sorted({p.acknowledged for p in snapshots})
    assert confirmed == [0, *(n * MiB for n in range(1, 6)), 5 * MiB + MiB // 2]
    assert_monotonic(snapshots, 5 * MiB + MiB // 2)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("kind", ["path", "bytes-io", "async-iterator"])
async def test_resumes_after_random_cuts(
    server: Server, make_proxy: ProxyFactory, random_file: RandomFile, seed: int, kind: str
) -> None:
    size = 12 * MiB + 333
    path, digest = random_file(size)
    rng = random.Random(seed)
    cuts = [rng.randrange(1_000, size // 4) for _ in range(4)]
    proxy = await make_proxy(server.port, cuts=cuts)
    source: UploadSource = path
    if kind == "bytes-io":
        source = io.BytesIO(path.read_bytes())
    elif kind == "async-iterator":
        source = chunks_of(path.read_bytes())
    snapshots: list[Progress] = []
    result = await upload(
        source,
        server=proxy.address,
        total=size,
        name="cut.bin",
        retry=FAST_RETRY,
        on_progress=snapshots.append,
    )
    check_result(result, size, digest, "cut.bin")
    assert proxy.cuts_made == 4
    assert result.reconnects == 4
    assert result.windows == 5
    assert_monotonic(snapshots, size)
    # Resumed, not restarted: some reconnects went on from a durable offset inside the file,
    # and the bytes sent again are only those in flight at each cut.
    assert any(0 < p.acknowledged < size for p in snapshots)
    assert sum(proxy.forwarded) < size + 4 * MiB


async def test_progress_iterator_is_monotonic_across_cuts(
    server: Server,
    make_proxy: ProxyFactory,
    random_file: RandomFile,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XSTREAM_UPLOAD_WINDOW", str(2 * MiB))
    size = 9 * MiB
    path, digest = random_file(size)
    proxy = await make_proxy(server.port, cuts=[3 * MiB, MiB + 100, 2 * MiB + 7])
    job = Upload(path, server=proxy.address, retry=FAST_RETRY)
    seen: list[Progress] = []

    async def watch() -> None:
        async for snapshot in job.progress_updates():
            seen.append(snapshot)

    watcher = asyncio.create_task(watch())
    result = await job.run()
    await watcher  # ends by itself once the upload is over
    check_result(result, size, digest, path.name)
    assert proxy.cuts_made == 3
    assert_monotonic(seen, size)


async def test_close_finishes_the_window_and_the_server_confirms_it(
    server: Server, random_file: RandomFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XSTREAM_UPLOAD_WINDOW", str(2 * MiB))
    size = 8 * MiB
    path, digest = random_file(size)
    closing: list[asyncio.Task[UploadResult | None]] = []

    def on_progress(progress: Progress) -> None:
        # Halfway through the second window: ask for a graceful stop.
        if not closing and progress.sent >= 3 * MiB:
            closing.append(asyncio.ensure_future(job.close()))

    job = Upload(path, server=address(server), on_progress=on_progress)
    with pytest.raises(UploadClosed) as stopped:
        await job.run()
    assert await closing[0] is None
    # The window in flight was finished and confirmed: exactly two windows are stored.
    assert stopped.value.offset == 4 * MiB
    assert stopped.value.key == job.key
    assert job.progress == Progress(4 * MiB, 4 * MiB, size)

    resumed = await upload(path, server=address(server), key=job.key)
    assert resumed.resumed_from == 4 * MiB
    check_result(resumed, size, digest, path.name)


async def test_abort_drops_the_connection_at_once_and_stays_resumable(
    server: Server, random_file: RandomFile
) -> None:
    size = 24 * MiB
    path, digest = random_file(size)
    aborted_at: list[Progress] = []

    def on_progress(progress: Progress) -> None:
        if not aborted_at and progress.sent >= 5 * MiB:
            aborted_at.append(progress)
            job.abort()

    job = Upload(path, server=address(server), on_progress=on_progress)
    with pytest.raises(UploadAborted) as stopped:
        await job.run()
    # No completion was waited for: nothing of the single window was confirmed, and
    # nothing more was sent after the abort.
    assert stopped.value.offset == 0
    assert stopped.value.key is not None
    assert job.progress.sent == aborted_at[0].sent < size

    resumed = await upload(path, server=address(server), key=stopped.value.key)
    check_result(resumed, size, digest, path.name)
    assert resumed.key == stopped.value.key
    assert resumed.resumed_from <= aborted_at[0].sent


async def test_close_before_a_grant_is_known_stops_at_once(
    server: Server, random_file: RandomFile
) -> None:
    path, _ = random_file(MiB)
    job = Upload(path, server=address(server))
    assert await job.close() is None
    with pytest.raises(UploadClosed) as stopped:
        await job.run()
    assert (stopped.value.key, stopped.value.offset) == (None, 0)


async def test_unknown_key_is_gone(server: Server, random_file: RandomFile) -> None:
    path, _ = random_file(1000)
    with pytest.raises(StreamGoneError) as refused:
        await upload(path, server=address(server), key="A" * 32)
    assert refused.value.status == 410


async def test_announced_checksum_is_accepted(server: Server, random_file: RandomFile) -> None:
    path, digest = random_file(MiB + 1)
    result = await upload(path, server=address(server), announce_checksum=True)
    check_result(result, MiB + 1, digest, path.name)


async def test_completed_key_repeats_its_result(server: Server, random_file: RandomFile) -> None:
    path, digest = random_file(MiB)
    first = await upload(path, server=address(server))
    again = await upload(path, server=address(server), key=first.key)
    assert again.resumed_from == MiB
    assert again.payload == first.payload
    check_result(again, MiB, digest, path.name)


async def test_one_pass_source_beyond_its_replay_buffer_is_not_resumable(
    server: Server, make_proxy: ProxyFactory
) -> None:
    data = bytes(range(256)) * (16 * 1024)  # 4 MiB
    # Cut inside the first 1 MiB write: the client has handed all of it to the socket,
    # and keeps only the last byte of it for replay.
    proxy = await make_proxy(server.port, cuts=[300_000])
    with pytest.raises(NotResumableError):
        await upload(
            chunks_of(data),
            server=proxy.address,
            total=len(data),
            replay_buffer=1,
            retry=FAST_RETRY,
        )


async def test_gives_up_after_bounded_retries(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 10)
    retries: list[int] = []
    with pytest.raises(ConnectionFailedError) as failed:
        await upload(
            path,
            server=f"127.0.0.1:{port}",
            retry=RetryPolicy(max_retries=3, initial_delay=0.001),
            on_retry=lambda n, delay, error: retries.append(n),
        )
    assert failed.value.attempts == 4
    assert retries == [1, 2, 3]


async def test_a_key_resumed_with_another_size_conflicts(
    server: Server, random_file: RandomFile
) -> None:
    first, _ = random_file(MiB)
    other, _ = random_file(MiB + 1)
    done = await upload(first, server=address(server))
    with pytest.raises(StreamConflictError) as refused:
        await upload(other, server=address(server), key=done.key)
    assert refused.value.status == 409


async def test_synchronous_upload_for_scripts(server: Server, random_file: RandomFile) -> None:
    path, digest = random_file(2 * MiB)
    # upload_sync runs its own event loop, so it runs in a thread while this loop serves.
    result = await asyncio.to_thread(upload_sync, path, server=address(server))
    check_result(result, 2 * MiB, digest, path.name)


def test_announcing_a_checksum_needs_a_file() -> None:
    with pytest.raises(ValueError, match="announce_checksum"):
        Upload(chunks_of(b"abc"), total=3, announce_checksum=True)


async def restart_mid_upload(
    make_server: ServerFactory,
    path: Path,
    stop_when: Callable[[Progress], bool],
    snapshots: list[Progress],
) -> tuple[UploadResult, list[int]]:
    """Upload ``path``; shut the server down once ``stop_when`` holds, start another on
    the same port and data, and let the client find it."""
    stop = asyncio.Event()
    statuses: list[int] = []

    def on_progress(progress: Progress) -> None:
        snapshots.append(progress)
        if stop_when(progress):
            stop.set()

    def on_retry(retry: int, delay: float, error: Exception) -> None:
        statuses.append(getattr(error, "status", 0))  # 0: the connection failed

    async with make_server() as first:
        port = first.port
        job = asyncio.create_task(
            upload(
                path,
                server=f"127.0.0.1:{port}",
                retry=RetryPolicy(max_retries=500, initial_delay=0.01, max_delay=0.02),
                on_progress=on_progress,
                on_retry=on_retry,
            )
        )
        async with asyncio.timeout(30):
            await stop.wait()
    async with make_server(port=port):
        async with asyncio.timeout(60):
            result = await job
    return result, statuses


async def test_resumes_across_a_server_restart(
    make_server: ServerFactory, random_file: RandomFile
) -> None:
    size = 96 * MiB
    path, digest = random_file(size)
    snapshots: list[Progress] = []
    result, statuses = await restart_mid_upload(
        make_server, path, lambda p: p.sent >= 8 * MiB, snapshots
    )
    check_result(result, size, digest, path.name)
    assert statuses[0] == 503  # the window was ended with "server shutting down"
    assert result.reconnects == len(statuses)
    assert result.windows == 2
    # The second window started where the first server had stored up to, not at zero.
    assert any(0 < p.acknowledged < size for p in snapshots)
    assert_monotonic(snapshots, size)


async def test_a_server_shutting_down_refuses_further_windows(
    make_server: ServerFactory, random_file: RandomFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XSTREAM_UPLOAD_WINDOW", str(MiB))
    size = 96 * MiB
    path, digest = random_file(size)
    result, _ = await restart_mid_upload(make_server, path, lambda p: p.acknowledged >= 4 * MiB, [])
    check_result(result, size, digest, path.name)
    assert result.reconnects >= 1


async def test_a_file_name_is_made_fit_for_a_header(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "two\nlines .bin"
    path.write_bytes(b"content")
    result = await upload(path, server=address(server))
    assert result.payload["name"] == "two?lines .bin"


@pytest.mark.parametrize("function", [upload, upload_sync], ids=["upload", "upload_sync"])
def test_upload_functions_name_every_option_of_upload(function: Callable[..., object]) -> None:
    """Explicit keyword arguments, not ``**options``: a misspelt option is a type error
    that mypy and editors see, and the options match ``Upload``'s one for one."""

    theirs = dict(inspect.signature(Upload).parameters)
    ours = dict(inspect.signature(function).parameters)
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in ours.values())
    assert list(ours) == list(theirs)
    for name, parameter in ours.items():
        assert (parameter.kind, parameter.default) == (
            theirs[name].kind,
            theirs[name].default,
        ), name


async def test_a_failed_completion_handler_is_run_again_by_the_clients_retry(
    make_server: ServerFactory,
) -> None:
    """The 503 of a completion handler that failed is transient: ``upload()`` resumes by
    itself, and the handler's second run gives the result."""
    runs: list[int] = []
    app = App()

    @app.stream("/flaky")
    async def flaky(done: CompletedUpload) -> dict[str, int]:
        runs.append(done.attempt)
        if len(runs) == 1:
            raise ConnectionError("the database blinked")
        return {"attempt": done.attempt}

    retries: list[Exception] = []
    data = random.randbytes(300_000)
    async with make_server(app=app) as running:
        result = await upload(
            io.BytesIO(data),
            server=address(running),
            route="/flaky",
            retry=RetryPolicy(initial_delay=0.01),
            on_retry=lambda _n, _delay, exc: retries.append(exc),
        )
    assert result.payload == {"attempt": 2}
    assert runs == [1, 2]
    assert len(retries) == 1 and "completion handler error" in str(retries[0])
    assert result.size == len(data)
