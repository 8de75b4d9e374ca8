"""``xstream-server --workers 2``: two processes on one port, sharing Redis and the data
directory under a supervisor. Streams land on whichever worker the kernel picks, resume on
either, and survive a worker killed with SIGKILL, which the supervisor starts again."""

from __future__ import annotations

import asyncio
import os
import signal

from tests.conftest import SpawnServer
from tests.durability.support import MiB, until
from tests.fleet.support import APP, finish, holder, start, workers


async def test_uploads_and_resumes_land_on_either_worker(spawn_server: SpawnServer) -> None:
    server = spawn_server("--workers", "2", *APP)
    assert len(workers(server)) == 2
    async with asyncio.timeout(60):
        bodies = [os.urandom(100_000 + n) for n in range(16)]
        results = await asyncio.gather(*(finish(server.port, body) for body in bodies))
        # The kernel spreads connections by their addresses: 16 on one of two workers
        # would be a 1-in-32768 chance.
        assert len({result["pid"] for result in results}) == 2
        # Streams begun, dropped, and resumed on fresh connections (either worker).
        pids = set()
        for n in range(6):
            body = os.urandom(300_000 + n)
            link, key = await start(server.port, body, 100_000)
            link.abort()
            await link.wait_closed(5)
            result = await finish(server.port, body, key)
            assert result["size"] == len(body)
            pids.add(result["pid"])
        assert pids <= {worker.pid for worker in workers(server)}
    assert server.terminate() == 0
    assert any("stopped" in line and "xstream.workers" in line for line in server.log)


async def test_a_worker_killed_mid_upload_is_restarted_and_its_stream_resumes(
    spawn_server: SpawnServer,
) -> None:
    # The embedded Redis: started once, by the supervisor, for both workers.
    server = spawn_server("--workers", "2", "--lease-seconds", "1", *APP, redis=None)
    body = os.urandom(3 * MiB)
    async with asyncio.timeout(60):
        link, key = await start(server.port, body, MiB)
        victim = holder(server, link)
        before = {worker.pid for worker in workers(server)}
        victim.send_signal(signal.SIGKILL)
        await link.wait_closed(10)
        # The supervisor notices and starts a new worker 0 or 1 in its place.
        await until(lambda: len(workers(server)) == 2 and victim.pid not in _pids(server))
        await until(lambda: sum("ready (pid" in line for line in server.log) == 3)
        assert len(before & _pids(server)) == 1
        # The stream resumes on whichever worker takes the new connection, once the dead
        # worker's lease lapses (a second here).
        result = await finish(server.port, body, key)
        assert result["size"] == len(body)
    assert server.terminate() == 0


def _pids(server: object) -> set[int]:
    from tests.conftest import ServerProcess

    assert isinstance(server, ServerProcess)
    return {worker.pid for worker in workers(server)}
