"""A Redis Cluster failover under an upload: the master that holds the stream's hash slot
is killed with SIGKILL and its replica is promoted (a cluster of its own, with replicas:
``failover_cluster``).

What is promised (docs/OPERATING.md, "A failover, and what a client sees"): the server
answers 503 while the slot has no master rather than hang, redis-py's cluster client finds
the new master by itself, and the client resumes to the right sha256. Replication is
asynchronous, so a checkpoint the replica had not received is lost with the master: the
stream then resumes from what the new master knows and the bytes past it are written again
(the second test makes that happen on purpose by stopping the replica)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from tests.conftest import RedisClusterProcesses, RedisProcess, ServerFactory
from tests.durability.support import ROUTE, MiB, StateProbe, part_size, sha256, until
from xstream_server.client import RetryPolicy, ServerProtocolError
from xstream_server.client import Upload as ClientUpload
from xstream_server.client.connection import ConnectionLostError
from xstream_server.client.errors import RetryableServerError


def _nodes(node: RedisProcess) -> list[list[str]]:
    """CLUSTER NODES as seen by ``node``, one list of fields per node."""
    client = redis.Redis(port=node.port)
    try:
        text = client.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
    finally:
        client.close()
    raw = text.decode() if isinstance(text, bytes) else str(text)
    return [line.split() for line in raw.splitlines()]


def _port(fields: list[str]) -> int:
    return int(fields[1].split("@")[0].rsplit(":", 1)[1])


def master_and_replica(
    cluster: RedisClusterProcesses, key: str
) -> tuple[RedisProcess, RedisProcess]:
    """The master that holds stream ``key``'s slot, and its replica."""
    slot = key_slot(f"xs:{{{key}}}:stream".encode())
    nodes = _nodes(cluster.nodes[0])
    master = next(
        fields
        for fields in nodes
        if "master" in fields[2].split(",") and any(_covers(part, slot) for part in fields[8:])
    )
    replica = next(fields for fields in nodes if fields[3] == master[0])
    by_port = {node.port: node for node in cluster.nodes}
    return by_port[_port(master)], by_port[_port(replica)]


def _covers(part: str, slot: int) -> bool:
    if part.startswith("["):  # a slot being migrated
        return False
    first, _, last = part.partition("-")
    return int(first) <= slot <= int(last or first)


def wait_replicated(master: RedisProcess) -> None:
    """Until the master's replica has every write the master acknowledged."""

    def caught_up() -> bool:
        client = redis.Redis(port=master.port)
        try:
            info = client.info("replication")
        finally:
            client.close()
        replica = info.get("slave0")
        return isinstance(replica, dict) and replica["offset"] == info["master_repl_offset"]

    _poll(caught_up)


def _drop_replica_link(master: RedisProcess) -> None:
    client = redis.Redis(port=master.port)
    try:
        assert client.client_kill_filter(_type="replica") == 1
    finally:
        client.close()


def wait_failover(
    cluster: RedisClusterProcesses, dead: RedisProcess, replica: RedisProcess
) -> None:
    """Until ``replica`` is a master and every living node says the cluster is ok."""
    living = [node for node in cluster.nodes if node is not dead]

    def promoted() -> bool:
        for node in living:
            client = redis.Redis(port=node.port)
            try:
                if client.cluster("INFO")["cluster_state"] != "ok":
                    return False
                if node is replica and client.info("replication")["role"] != "master":
                    return False
            finally:
                client.close()
        return True

    _poll(promoted)


def _poll(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    """Poll the cluster's own reports: gossip and replication announce nothing."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the cluster did not get there in time"
        time.sleep(0.02)


async def test_a_master_killed_mid_upload_is_replaced_and_the_client_resumes(
    make_server: ServerFactory,
    failover_cluster: RedisClusterProcesses,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XSTREAM_UPLOAD_WINDOW", str(MiB))
    body = os.urandom(4 * MiB + 1000)
    killed = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield body[: 3 * MiB // 2]  # the first window, half of the second
        await killed.wait()
        yield body[3 * MiB // 2 :]

    seen: list[Exception] = []
    async with (
        asyncio.timeout(90),
        make_server(redis_url=failover_cluster.url, lease_seconds=1.0, redis_timeout=1.0) as server,
    ):
        upload = ClientUpload(
            chunks(),
            server=f"127.0.0.1:{server.port}",
            route=ROUTE,
            total=len(body),
            replay_buffer=len(body),
            retry=RetryPolicy(max_retries=20, max_delay=1.0),
            on_retry=lambda _n, _delay, error: seen.append(error),
        )
        running = asyncio.create_task(upload.run())
        await until(lambda: upload.progress.acknowledged >= MiB or running.done())
        assert upload.key is not None
        master, replica = master_and_replica(failover_cluster, upload.key)
        # Everything acknowledged so far has reached the replica: nothing of it may be lost.
        await asyncio.to_thread(wait_replicated, master)
        acknowledged = upload.progress.acknowledged
        await asyncio.to_thread(master.kill)
        killed.set()
        result = await running
        # The promotion took place while the client was retrying.
        await asyncio.to_thread(wait_failover, failover_cluster, master, replica)

    print(f"\nfailover: the client retried after {[str(error) for error in seen]}")
    assert result.sha256 == sha256(body).removeprefix("sha256:")
    assert acknowledged >= MiB
    # What the client saw while the slot had no master: 503s (a retryable answer, with the
    # bytes missing counted from the durable offset) or a dropped connection, never a hang.
    assert seen, "the client never noticed the failover"
    assert all(isinstance(e, RetryableServerError | ConnectionLostError) for e in seen), seen
    assert any(isinstance(e, RetryableServerError) and e.status == 503 for e in seen), seen


async def test_a_checkpoint_the_replica_missed_is_lost_and_the_stream_resends_from_what_redis_knows(
    make_server: ServerFactory,
    failover_cluster: RedisClusterProcesses,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("XSTREAM_UPLOAD_WINDOW", str(MiB))
    body = os.urandom(3 * MiB + 1000)
    gates = [asyncio.Event(), asyncio.Event()]

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:MiB]
        await gates[0].wait()
        yield body[MiB : 2 * MiB]
        await gates[1].wait()
        yield body[2 * MiB :]

    # Reads the state through a node that survives (the replica), named once it is known.
    probe = StateProbe(failover_cluster.url, tmp_path / "data")
    try:
        async with (
            asyncio.timeout(90),
            make_server(
                redis_url=failover_cluster.url, lease_seconds=1.0, redis_timeout=1.0
            ) as server,
        ):
            upload = ClientUpload(
                chunks(),
                server=f"127.0.0.1:{server.port}",
                route=ROUTE,
                total=len(body),
                replay_buffer=len(body),
                retry=RetryPolicy(max_retries=20, max_delay=1.0),
            )
            running = asyncio.create_task(upload.run())
            await until(lambda: upload.progress.acknowledged >= MiB or running.done())
            key = upload.key
            assert key is not None
            master, replica = master_and_replica(failover_cluster, key)
            await probe.close()
            probe = StateProbe(f"redis+cluster://127.0.0.1:{replica.port}", tmp_path / "data")
            await asyncio.to_thread(wait_replicated, master)
            # The replica is stopped and the master drops its link to it: the next window's
            # checkpoint is acknowledged to the client by the master alone (what replication
            # lag does, made certain).
            assert replica.process is not None
            replica.process.send_signal(signal.SIGSTOP)
            try:
                await asyncio.to_thread(_drop_replica_link, master)
                gates[0].set()
                await until(lambda: upload.progress.acknowledged >= 2 * MiB or running.done())
                assert upload.progress.acknowledged == 2 * MiB
                await asyncio.to_thread(master.kill)
            finally:
                replica.process.send_signal(signal.SIGCONT)
            assert part_size(probe.part(key)) == 2 * MiB  # written, fsynced, acknowledged
            gates[1].set()
            # The client's next accept reports 1 MiB, less than the 2 MiB it was told: our
            # client stops there, loudly, with the key still resumable.
            with pytest.raises(ServerProtocolError, match="went back from 2097152 to 1048576"):
                await running
            await asyncio.to_thread(wait_failover, failover_cluster, master, replica)
            # The new master knows the first window only; the accept that told the client
            # so cut the part back to it. A new client (one that has not been told more)
            # resumes from there: the bytes past 1 MiB are written again.
            assert await probe.recorded_offset(key) == MiB
            assert part_size(probe.part(key)) == MiB
            again = await ClientUpload(
                io.BytesIO(body), server=f"127.0.0.1:{server.port}", route=ROUTE, key=key
            ).run()
        assert again.sha256 == sha256(body).removeprefix("sha256:")
        assert probe.complete(key).read_bytes() == body
    finally:
        await probe.close()
