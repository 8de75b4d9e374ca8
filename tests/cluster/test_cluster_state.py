"""The state store's cluster-specific parts: how a cluster URL is told apart, the expiry
index spread over the masters, and the move of an older single-key index into the shards."""

from __future__ import annotations

import time

import redis
import redis.asyncio as aioredis

from tests.conftest import RedisClusterProcesses, RedisProcess
from xstream_server.state import RedisStateStore, StreamRecord
from xstream_server.state.redis import (
    EXPIRY_INDEX_KEYS,
    LEGACY_EXPIRY_INDEX,
    expiry_index_key,
    is_cluster_url,
)


def record(key: str, expiry: float = 60.0) -> StreamRecord:
    now = time.time()
    return StreamRecord(
        key=key,
        route="/upload-file",
        total=100,
        offset=0,
        buffer_size=10,
        data_format="bytes",
        created=now,
        updated=now,
        expiry=expiry,
    )


def test_cluster_urls_are_told_apart_by_their_scheme() -> None:
    assert is_cluster_url("redis+cluster://10.0.0.1:7000")
    assert is_cluster_url("REDISS+CLUSTER://user:pw@node:7000/0")
    assert not is_cluster_url("redis://127.0.0.1:6379/0")
    assert not is_cluster_url("unix:///run/redis.sock")


async def test_expiry_index_is_spread_over_every_master(
    redis_url: str, redis_cluster: RedisClusterProcesses
) -> None:
    store = RedisStateStore(redis_url)
    try:
        keys = [f"stream{n}" for n in range(64)]
        for key in keys:
            await store.create(record(key, expiry=1.0), "owner")
        assert sorted(await store.active_keys()) == sorted(keys)
        assert sorted(await store.expired(time.time() + 2)) == sorted(keys)
        assert await store.expired(time.time() - 10) == []
        # Each stream's keys on one node, the shards on all three.
        holding = []
        for node in redis_cluster.nodes:
            client = redis.Redis(port=node.port)
            holding.append(
                sum(
                    client.zcard(index)
                    for index in EXPIRY_INDEX_KEYS
                    if client.cluster("KEYSLOT", index) in _slots(client)
                )
            )
            client.close()
        assert all(count > 0 for count in holding), holding
        assert sum(holding) == len(keys)
        # Deleting counts once: the second call finds nothing left to remove.
        assert await store.delete("stream0") is True
        assert await store.delete("stream0") is False
        assert await store.forget("stream1") is True
        assert await store.forget("stream1") is False
    finally:
        await store.close()


def _slots(client: redis.Redis) -> set[int]:
    """The hash slots this node serves."""
    me = client.cluster("MYID")
    me = me.decode() if isinstance(me, bytes) else me
    served: set[int] = set()
    for first, last, *nodes in client.cluster("SLOTS"):
        node_id = nodes[0][2]
        node_id = node_id.decode() if isinstance(node_id, bytes) else node_id
        if node_id == me:
            served.update(range(first, last + 1))
    return served


async def test_an_unsharded_index_of_an_older_version_moves_into_the_shards(
    redis_process: RedisProcess,
) -> None:
    client = aioredis.Redis.from_url(redis_process.url)
    await client.flushall()
    store = RedisStateStore(redis_process.url)
    try:
        await client.zadd(LEGACY_EXPIRY_INDEX, {"old1": 1000, "old2": 2000})
        assert await store.upgrade() == 2
        assert not await client.exists(LEGACY_EXPIRY_INDEX)
        assert await client.zscore(expiry_index_key("old1"), "old1") == 1000
        assert sorted(await store.expired(3.0)) == ["old1", "old2"]
        assert await store.upgrade() == 0
    finally:
        await store.close()
        await client.aclose()
