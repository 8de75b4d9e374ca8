"""Several instances, one fleet: servers on different ports (standing in for machines)
sharing one Redis and one data directory. A stream begun on A resumes on B after A is
killed; sweepers on both never delete a stream twice, nor one that is live on the other."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from tests.conftest import ServerFactory, SpawnServer
from tests.durability.conftest import Connect
from tests.durability.support import MiB, StateProbe, status, until
from tests.durability.test_sweeper import SHORT, left_behind, start, sweeper_app
from tests.durability.test_takeover import wait_recorded
from tests.fleet.support import APP, finish
from tests.fleet.support import start as start_upload


async def test_a_stream_of_an_instance_killed_with_sigkill_resumes_on_another(
    spawn_server: SpawnServer, redis_url: str, tmp_path: Path
) -> None:
    flags = ("--lease-seconds", "2", "--checkpoint-bytes", str(MiB), *APP)
    a, b = spawn_server(*flags), spawn_server(*flags)
    body = os.urandom(4 * MiB)
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with asyncio.timeout(60):
            link, key = await start_upload(a.port, body, MiB + 100_000)
            durable = await wait_recorded(probe, key, MiB)
            assert await probe.lease_ttl_ms(key) > 0  # A streams it
            assert a.process is not None
            killed = time.monotonic()
            a.process.send_signal(signal.SIGKILL)
            await link.wait_closed(10)
            # B takes the stream once A's lease lapses, from A's last durable offset.
            result = await finish(b.port, body, key)
            print(f"resumed on B {time.monotonic() - killed:.2f} s after A was killed")
            assert b.process is not None
            assert result == {"pid": b.process.pid, "size": len(body), "sha256": result["sha256"]}
            assert durable >= MiB
    finally:
        await probe.close()


async def test_sweepers_of_two_instances_delete_each_stream_once_and_no_live_one(
    make_server: ServerFactory, connect: Connect, redis_url: str, tmp_path: Path
) -> None:
    bodies = [os.urandom(40_000 + n) for n in range(8)]
    probe = StateProbe(redis_url, tmp_path / "data")
    options = {"app": sweeper_app(), "orphan_grace": 0, "sweep_interval": 3600}
    try:
        async with (
            asyncio.timeout(60),
            make_server(**options) as a,
            make_server(**options) as b,
        ):
            assert a.engine is not None and b.engine is not None
            dead = [await left_behind(a, connect, "/short", body) for body in bodies[:6]]
            # Live on B, idle past its expiry in the sweepers' future: A sees only its
            # record and its lease, held by B.
            live_link = await connect(b.port)
            live = await start(live_link, "/short", bodies[6], 10_000)
            await until(lambda: live in b.engine.sessions if b.engine else False)

            future = time.time() + SHORT + 1
            engines = (a.engine, b.engine, a.engine, b.engine)
            counts = await asyncio.gather(*(engine.sweep(now=future) for engine in engines))

            assert sum(c["expired"] for c in counts) == len(dead), counts
            for key in dead:
                assert await probe.record(key) == {}
                assert not probe.part(key).exists()
            assert (await probe.record(live))["state"] == "active"
            assert await probe.expiry_index() == {live}
            await live_link.send_raw(bodies[6][10_000:])
            assert status(await live_link.receive()) == 0
    finally:
        await probe.close()
