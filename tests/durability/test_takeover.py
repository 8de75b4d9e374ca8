"""Ownership of a stream (PROTOCOL §3.4): the newest request wins, within one server process
and across two processes sharing Redis and the data directory; a dead owner's lease expires.

The takeover times are printed (``pytest -s``); they are only checked against a generous
bound, as they depend on the machine's load."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.conftest import SpawnServer
from tests.durability.conftest import Connect
from tests.durability.support import (
    ROUTE,
    MiB,
    StateProbe,
    grant,
    missing,
    sha256,
    status,
    until,
)


async def wait_recorded(probe: StateProbe, key: str, at_least: int) -> int:
    """Wait until Redis records ``at_least`` bytes: the owner has checkpointed them."""

    async def recorded() -> bool:
        return (await probe.recorded_offset(key) or 0) >= at_least

    await until(recorded)
    return await probe.recorded_offset(key) or 0


@pytest.mark.parametrize("where", ["same-process", "cross-process"])
async def test_resume_takes_over_a_stalled_stream(
    connect: Connect, spawn_server: SpawnServer, redis_url: str, tmp_path: Path, where: str
) -> None:
    flags = ("--lease-seconds", "2", "--checkpoint-bytes", str(MiB))
    first = spawn_server(*flags)
    second = first if where == "same-process" else spawn_server(*flags)
    data = os.urandom(3 * MiB)
    request: dict[str, str | int] = {"route": ROUTE, "x-stream": f"{len(data)}:65536"}
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with asyncio.timeout(30):
            old = await connect(first.port)
            accept = await old.request(request)
            assert status(accept) == 0
            key = accept.headers["x-stream-key"]
            sent = await old.send_raw(data[: MiB + 100_000])
            await wait_recorded(probe, key, MiB)
            # The old client stalls: its socket stays open, no more bytes come.
            new = await connect(second.port)
            asked = time.monotonic()
            await new.send({**request, "x-stream-key": key})
            answered, resume = await new.receive_timed()
            took = answered - asked
            print(f"\ntakeover {where}: resume sent → accept reply in {took * 1000:.1f} ms")
            assert took < 10
            assert status(resume) == 0
            offset, window = grant(resume, len(data))
            assert MiB <= offset <= sent
            assert window == len(data) - offset
            # The old connection got its completion: an error and the bytes still missing,
            # counted from the same durable offset the new owner reports.
            superseded = await old.receive()
            assert status(superseded) == 409
            assert superseded.headers["x-stream-key"] == key
            assert missing(superseded) == len(data) - offset
            await old.wait_closed()
            await new.send_raw(data[offset:])
            done = await new.receive()
            assert status(done) == 0
            assert done.headers["x-stream-checksum"] == sha256(data)
            new.close()
        assert probe.complete(key).read_bytes() == data
        assert (await probe.record(key))["state"] == "complete"
    finally:
        await probe.close()


async def test_lease_of_a_killed_owner_expires(
    connect: Connect, spawn_server: SpawnServer, redis_url: str, tmp_path: Path
) -> None:
    """The owner dies without letting go (SIGKILL: no release, no answer to the takeover
    request); another process gets the stream once the lease runs out, not before."""
    lease = 1.5
    flags = ("--lease-seconds", str(lease), "--checkpoint-bytes", str(MiB))
    owner = spawn_server(*flags)
    other = spawn_server(*flags)
    data = os.urandom(2 * MiB + 4321)
    request: dict[str, str | int] = {"route": ROUTE, "x-stream": f"{len(data)}:65536"}
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with asyncio.timeout(30):
            link = await connect(owner.port)
            key = (await link.request(request)).headers["x-stream-key"]
            await link.send_raw(data[: MiB + 50_000])
            recorded = await wait_recorded(probe, key, MiB)
            await asyncio.to_thread(owner.kill)
            ttl = await probe.lease_ttl_ms(key) / 1000
            ttl_read = time.monotonic()
            assert 0 < ttl <= lease, "the dead owner's lease should still be there"
            resumer = await connect(other.port)
            await resumer.send({**request, "x-stream-key": key})
            answered, resume = await resumer.receive_timed()
            waited = answered - ttl_read
            print(
                f"\nlease {lease} s of a killed owner: resumed after {waited:.2f} s "
                f"(TTL {ttl:.2f} s)"
            )
            assert status(resume) == 0
            assert waited >= ttl - 0.05, "the lease was taken before it expired"
            assert waited < lease + 3
            offset, _ = grant(resume, len(data))
            assert offset == recorded
            await resumer.send_raw(data[offset:])
            done = await resumer.receive()
            assert status(done) == 0
            assert done.headers["x-stream-checksum"] == sha256(data)
            resumer.close()
        assert probe.complete(key).read_bytes() == data
    finally:
        await probe.close()
