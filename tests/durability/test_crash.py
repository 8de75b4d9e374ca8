"""Crash safety (PROTOCOL §3.5): uploads survive ``kill -9`` of the server at random points.

Eight uploads run at once against an ``xstream-server`` child process, which is killed with
SIGKILL several times, each time once a random amount of further bytes has been sent, and
restarted on the same Redis and data directory. After every kill, before the restart, the
state left behind must cover every offset the server had reported; at the end every upload
is complete with the right sha256, reported offsets never went down, and every one of them is
covered by the final file.

``XSTREAM_CRASH_CYCLES`` and ``XSTREAM_CRASH_SEED`` change the number of kills and the
random points, for longer runs by hand.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

from tests.conftest import ServerFactory, ServerProcess, SpawnServer
from tests.durability.conftest import Connect
from tests.durability.support import (
    MiB,
    StateProbe,
    Upload,
    check_reports,
    grant,
    sha256,
    status,
)
from xstream_server.state.redis import expiry_index_key

CYCLES = int(os.environ.get("XSTREAM_CRASH_CYCLES", "5"))
SEED = int(os.environ.get("XSTREAM_CRASH_SEED", str(random.randrange(1 << 32))))
UPLOADS = 8
SIZE = 4 * MiB
LEASE = 1.0
# A lease can run out under heavy load without anyone taking the stream: the owner's next
# checkpoint then fails safely with this 409, and the client resumes. Counted, not a failure.
LAPSED = "409 stream taken over by a newer request"


class Progress:
    """Raw bytes the clients have written so far, with awaitable thresholds."""

    def __init__(self) -> None:
        self.sent = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def add(self, count: int) -> None:
        self.sent += count
        for target, waiter in self._waiters:
            if self.sent >= target and not waiter.done():
                waiter.set_result(None)
        self._waiters = [(t, w) for t, w in self._waiters if not w.done()]

    async def reach(self, target: int) -> None:
        if self.sent < target:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append((target, waiter))
            await waiter


class CrashingServer:
    """One server at a time on a shared Redis and data directory; ``up`` is set while it runs."""

    def __init__(self, spawn: SpawnServer, *flags: str, env: dict[str, str]) -> None:
        self.spawn = spawn
        self.flags = flags
        self.env = env
        self.lives: list[ServerProcess] = []
        self.up = asyncio.Event()

    @property
    def current(self) -> ServerProcess:
        return self.lives[-1]

    async def start(self) -> None:
        self.lives.append(await asyncio.to_thread(self.spawn, *self.flags, env=self.env))
        self.up.set()

    def kill(self) -> None:
        self.up.clear()  # first: a client that sees the crash finds the server down
        self.current.kill()

    def log(self) -> str:
        """The last life's log, for failure reports."""
        return "".join(self.current.log[-60:]) if self.lives else ""


async def keep_uploading(
    upload: Upload, server: CrashingServer, progress: Progress, unexpected: list[str]
) -> None:
    """Upload to whichever server runs now until complete. A failure a kill does not explain
    (the same server still up) is noted and retried."""
    while True:
        await server.up.wait()
        life = server.current
        try:
            if await upload.run(life.port, progress.add):
                return
            failure = upload.errors[-1]
        except (OSError, EOFError) as exc:
            failure = repr(exc)
        if server.up.is_set() and server.current is life and failure != LAPSED:
            assert life.process is not None
            unexpected.append(f"{failure} (server exit code {life.process.poll()})")
            if len(unexpected) > 20:
                raise AssertionError(f"uploads keep failing: {unexpected[-5:]}\n{server.log()}")


async def test_uploads_survive_repeated_kill_9(
    spawn_server: SpawnServer, redis_url: str, tmp_path: Path
) -> None:
    print(f"\ncrash test: seed {SEED}, {CYCLES} kill cycles")
    rng = random.Random(SEED)
    uploads = [Upload(rng.randbytes(SIZE)) for _ in range(UPLOADS)]
    server = CrashingServer(
        spawn_server,
        *("--lease-seconds", str(LEASE), "--checkpoint-bytes", str(MiB), "--fsync"),
        env={"XSTREAM_UPLOAD_WINDOW": str(MiB // 2)},  # a completion packet every 512 KiB
    )
    probe = StateProbe(redis_url, tmp_path / "data")
    progress = Progress()
    unexpected: list[str] = []
    kills = 0
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    try:
        async with asyncio.timeout(60 + 15 * CYCLES):
            await server.start()
            tasks = [
                asyncio.create_task(keep_uploading(u, server, progress, unexpected))
                for u in uploads
            ]
            all_done = asyncio.ensure_future(
                asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            )
            # Each kill comes once a random share of what is left has been sent (again).
            share = min(0.3, 1.5 / max(CYCLES, 1))
            for _ in range(CYCLES):
                left = sum(u.total - u.durable for u in uploads)
                target = progress.sent + 1 + int(rng.uniform(0, share) * left)
                reached = asyncio.ensure_future(progress.reach(target))
                await asyncio.wait([reached, all_done], return_when=asyncio.FIRST_COMPLETED)
                reached.cancel()
                if all_done.done():
                    break
                server.kill()
                kills += 1
                for upload in uploads:  # every packet the dead server sent has arrived
                    if upload.link is not None:
                        await upload.link.wait_closed(10)
                for upload in uploads:
                    await probe.check_durable(upload)
                await server.start()
            await asyncio.gather(*tasks)
        for upload in uploads:
            assert upload.checksum == sha256(upload.data)
            assert upload.key is not None
            assert probe.complete(upload.key).read_bytes() == upload.data
        checked = check_reports(uploads, lambda u: probe.stored(u.key or ""))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await probe.close()
    lapses = sum(u.errors.count(LAPSED) for u in uploads)
    print(
        f"crash test: {kills} kills survived in {time.monotonic() - started:.1f} s; "
        f"{checked} reported offsets checked; {progress.sent / MiB:.1f} MiB sent for "
        f"{UPLOADS * SIZE / MiB:.0f} MiB; lapsed leases: {lapses}"
    )
    assert unexpected == [], server.log()
    assert kills == CYCLES, f"the uploads finished after {kills} kills"


async def test_crash_between_finalize_and_record_completes_on_resume(
    make_server: ServerFactory, connect: Connect, redis_url: str, tmp_path: Path
) -> None:
    """The narrowest crash point, made deterministic: every byte is durable and the part has
    been renamed to the finished file, but the record was not marked complete yet. A resume
    reports the full offset (never less) and completes the stream from the finished file."""
    data = os.urandom(MiB + 77)
    request: dict[str, str | int] = {"route": "/upload-file", "x-stream": f"{len(data)}:65536"}
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with asyncio.timeout(30):
            async with make_server() as running:
                link = await connect(running.port)
                key = (await link.request(request)).headers["x-stream-key"]
                await link.send_raw(data)
                assert status(await link.receive()) == 0
            # Rewind the record to what the crash would have left: active, all bytes durable.
            stream = f"xs:{{{key}}}:stream"
            result = [f for f in await probe.record(key) if f.startswith("result_")]
            await probe.redis.hdel(stream, *result)
            await probe.redis.hset(stream, "state", "active")
            await probe.redis.zadd(expiry_index_key(key), {key: int(time.time() * 1000) + 60_000})
            assert not probe.part(key).exists()
            async with make_server() as running:
                link = await connect(running.port)
                resume = await link.request({**request, "x-stream-key": key})
                assert status(resume) == 0
                assert grant(resume, len(data)) == (len(data), 0)
                done = await link.receive()
            assert status(done) == 0
            assert done.headers["x-stream"] == "0:0"
            assert done.headers["x-stream-checksum"] == sha256(data)
            assert (await probe.record(key))["state"] == "complete"
            assert probe.complete(key).read_bytes() == data
    finally:
        await probe.close()
