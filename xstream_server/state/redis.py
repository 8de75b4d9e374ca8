"""The Redis state store (redis-py's asyncio client).

Key schema (``{K}`` is the stream key; the braces are Redis Cluster hash tags, so a stream's
keys live in one slot and the Lua scripts below stay cluster-safe):

``xs:{K}:stream``  hash, the stream record: ``route total offset buffer format state created
                   updated expiry metadata principal checksum``, ``deferred`` (``1`` while
                   the length is still to be said; ``total`` is then the most it may be),
                   ``partial`` (``1``: a part of a tus concatenation), ``concat`` (JSON
                   list of the partial keys a final stream was made of), ``final`` (on a
                   partial stream: the final one waiting for it); once finalized,
                   ``sha256`` and ``attempts`` (completion handler runs begun); once complete,
                   ``result_status result_headers result_payload result_format``.
                   TTL: the stream's expiry, renewed at every checkpoint; twice that for
                   a finalized stream, or one whose handler never succeeded, so that the
                   sweeper meets it before it vanishes and deletes its finished file.
``xs:{K}:lease``   string, the owner (``<instance>:<connection>``) streaming K now; short TTL,
                   renewed by the owner; a checkpoint by anyone else fails.
``xs:expiry:{N}``  the expiry index, sharded: ``EXPIRY_SHARDS`` sorted sets (N = 0, 1, ...),
                   each its own hash tag, so a cluster spreads them over its masters. A
                   stream lives in shard ``crc32(K) % EXPIRY_SHARDS``, scored by the earliest
                   time it can expire (epoch ms); every instance's sweeper reads all shards.
                   Scores are set at creation and moved on by the sweeper when it finds a
                   stream renewed since (checkpoints renew only the record, to keep the hot
                   path at one Redis trip); complete streams leave the index when the
                   sweeper meets them. (Before the index was sharded it was one set,
                   ``xs:expiry``; ``upgrade`` moves its members into the shards.)
``xs:takeover:<instance>``  pub/sub channel: keys another instance wants this one to release.
``xs:events``      stream (XADD), the lifecycle events of every stream, capped (docs/EVENTS.md).

Cluster rules, for anyone adding keys: a key that belongs to one stream carries the stream's
hash tag (``xs:{K}:...``); a script or a multi-key command names only keys of one tag; data
shared by all streams is sharded over several tags, never one hot key, and is written in its
own command after the stream's (a crash in between leaves a record the sweeper still finds
by its TTL and its part file, never an index entry pointing at nothing that matters).

A URL ``redis+cluster://host:port`` (or ``rediss+cluster://``) names a Redis Cluster: the
store then uses redis-py's ``RedisCluster``, which finds the other nodes from that one.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from functools import wraps
from typing import Any, Final, ParamSpec, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import metrics
from .base import LeaseLost, StateUnavailable, StoredResult, StreamRecord, StreamState

__all__ = [
    "EXPIRY_INDEX_KEYS",
    "EXPIRY_SHARDS",
    "RedisStateStore",
    "expiry_index_key",
    "is_cluster_url",
    "plain_url",
]

EXPIRY_SHARDS: Final = 16
LEGACY_EXPIRY_INDEX: Final = "xs:expiry"
_CLUSTER_SCHEMES: Final = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    """``redis+cluster://`` or ``rediss+cluster://``: a Redis Cluster."""
    return url.partition("://")[0].lower() in _CLUSTER_SCHEMES


def plain_url(url: str) -> str:
    """The URL redis-py takes: ``redis+cluster://`` → ``redis://``."""
    scheme, sep, rest = url.partition("://")
    return _CLUSTER_SCHEMES.get(scheme.lower(), scheme) + sep + rest


def expiry_index_key(key: str) -> str:
    """The shard of the expiry index that holds stream ``key``."""
    return f"xs:expiry:{{{zlib.crc32(key.encode()) % EXPIRY_SHARDS}}}"


EXPIRY_INDEX_KEYS: Final = tuple(f"xs:expiry:{{{n}}}" for n in range(EXPIRY_SHARDS))

# KEYS: stream, lease. ARGV: owner, expiry_ms, lease_ms, then the record's field/value pairs.
_CREATE: Final = """
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
return 1
"""

# Both scripts act only for the lease owner and return the record's expiry in ms
# (-1: the lease is someone else's, -2: the record is gone).
# KEYS: stream, lease. ARGV: owner, offset, now_ms, lease_ms, force.
_CHECKPOINT: Final = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local expiry = redis.call('HGET', KEYS[1], 'expiry')
if not expiry then return -2 end
local current = tonumber(redis.call('HGET', KEYS[1], 'offset'))
local offset = tonumber(ARGV[2])
if offset > current or ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'offset', offset) end
redis.call('HSET', KEYS[1], 'updated', ARGV[3])
redis.call('PEXPIRE', KEYS[1], expiry)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return tonumber(expiry)
"""

# KEYS: stream, lease. ARGV: owner, now_ms, TTL factor, then the result's fields.
_COMPLETE: Final = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local expiry = redis.call('HGET', KEYS[1], 'expiry')
if not expiry then return -2 end
redis.call('HSET', KEYS[1], 'state', 'complete', 'offset', redis.call('HGET', KEYS[1], 'total'),
  'updated', ARGV[2], 'result_status', ARGV[4], 'result_headers', ARGV[5],
  'result_payload', ARGV[6], 'result_format', ARGV[7])
redis.call('PEXPIRE', KEYS[1], tonumber(expiry) * tonumber(ARGV[3]))
redis.call('DEL', KEYS[2])
return tonumber(expiry)
"""

# KEYS: stream, lease. ARGV: owner, now_ms, sha256. Returns the attempts begun, or -1/-2.
_FINALIZE: Final = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local expiry = redis.call('HGET', KEYS[1], 'expiry')
if not expiry then return -2 end
redis.call('HSET', KEYS[1], 'state', 'finalized', 'offset', redis.call('HGET', KEYS[1], 'total'),
  'updated', ARGV[2], 'sha256', ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(expiry) * 2)
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""

# KEYS: stream, lease. ARGV: owner, now_ms. Returns the attempts begun, or -1/-2.
_ATTEMPT: Final = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local expiry = redis.call('HGET', KEYS[1], 'expiry')
if not expiry then return -2 end
redis.call('HSET', KEYS[1], 'updated', ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(expiry) * 2)
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""

# KEYS: stream. ARGV: total.
_SET_TOTAL: Final = """
local fields = redis.call('HMGET', KEYS[1], 'deferred', 'offset')
if not fields[2] then return 'gone' end
if fields[1] ~= '1' then return 'known' end
if tonumber(fields[2]) > tonumber(ARGV[1]) then return 'short' end
redis.call('HSET', KEYS[1], 'total', ARGV[1])
redis.call('HDEL', KEYS[1], 'deferred')
return 'ok'
"""

# KEYS: stream, lease. Returns 1 if the record was there.
_DELETE: Final = """
local removed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
return removed
"""

# KEYS: stream (a partial one). ARGV: the final stream's key, the one it may replace.
_SET_FINAL: Final = """
local fields = redis.call('HMGET', KEYS[1], 'route', 'final')
if not fields[1] then return 'gone' end
if fields[2] and fields[2] ~= ARGV[1] and fields[2] ~= ARGV[2] then return 'taken' end
redis.call('HSET', KEYS[1], 'final', ARGV[1])
return 'ok'
"""

# KEYS: stream, lease. ARGV: owner, lease_ms. {1, the record's fields} when the lease was
# free and is now the owner's; {0, the owner} when it is someone else's.
_TAKE: Final = """
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('HGETALL', KEYS[1])}
end
return {0, redis.call('GET', KEYS[2])}
"""

_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

P = ParamSpec("P")
R = TypeVar("R")


class _Call:
    """One command waiting for its batch: a script (run by its sha) or a plain command."""

    __slots__ = ("answer", "args", "command", "keys", "script")

    def __init__(
        self, script: Any, keys: Sequence[Any], args: Sequence[Any], command: tuple[Any, ...]
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.command = command
        self.answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class _Batch:
    """Commands asked for in one turn of the event loop go to Redis together, in one
    pipeline (not a transaction: each command stands alone, as if sent by itself), in the
    order they were asked for. Many streams finishing at once (a shared folder fsync wakes
    them together) then cost one trip, not one each: the client's per-trip work (a pooled
    connection, a write, a read) and Redis's own are paid once.

    A script goes by its sha (EVALSHA), without redis-py's check that the server knows it
    (a trip of its own); one the server lost (a restart) is loaded and run again by itself.
    A single command in a turn goes as it would have without the batch."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._waiting: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    def script(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> asyncio.Future[Any]:
        return self._add(
            _Call(script, keys, args, ("EVALSHA", script.sha, len(keys), *keys, *args))
        )

    def command(self, *command: Any) -> asyncio.Future[Any]:
        return self._add(_Call(None, (), (), command))

    def _add(self, call: _Call) -> asyncio.Future[Any]:
        self._waiting.append(call)
        if len(self._waiting) == 1:
            asyncio.get_running_loop().call_soon(self._send)
        return call.answer

    def _send(self) -> None:
        calls, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._trip(calls))
        self._sending.add(task)  # held until done: a task nobody refers to may vanish
        task.add_done_callback(self._sending.discard)

    async def _alone(self, call: _Call) -> Any:
        if call.script is not None:
            return await call.script(keys=call.keys, args=call.args)
        return await self._redis.execute_command(*call.command)

    async def _trip(self, calls: list[_Call]) -> None:
        try:
            if len(calls) == 1:
                results: list[Any] = [await self._alone(calls[0])]
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for call in calls:
                        pipe.execute_command(*call.command)
                    results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            for call in calls:
                if not call.answer.done():
                    if isinstance(exc, asyncio.CancelledError):
                        call.answer.cancel()
                    else:
                        call.answer.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, NoScriptError) and call.script is not None:
                try:
                    result = await self._alone(call)
                except Exception as exc:
                    result = exc
            if call.answer.done():  # its caller gave up (cancelled)
                continue
            if isinstance(result, Exception):
                call.answer.set_exception(result)
            else:
                call.answer.set_result(result)


def _unavailable_on_redis_error(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Redis errors become ``StateUnavailable``; the call's duration goes to the metrics."""
    observe = metrics.redis_timer(method.__name__)

    @wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StateUnavailable(f"redis unreachable: {exc}") from exc
        except (RedisError, RedisClusterException) as exc:
            # RedisClusterException (no node of the cluster reachable...) is no RedisError.
            raise StateUnavailable(f"redis error: {exc}") from exc
        finally:
            observe(time.perf_counter() - started)

    return call


def _stream_key(key: str) -> str:
    return f"xs:{{{key}}}:stream"


def _lease_key(key: str) -> str:
    return f"xs:{{{key}}}:lease"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _check_owner(key: str, answer: int) -> None:
    if answer == -1:
        raise LeaseLost(f"stream {key} is owned by another connection now")
    if answer == -2:
        raise LeaseLost(f"stream {key} has no record any more")


def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _record_of(key: str, raw: dict[bytes, bytes]) -> StreamRecord | None:
    """A stream record from its hash's fields (None: no record)."""
    if not raw or b"total" not in raw:
        return None
    result = None
    if b"result_status" in raw:
        result = StoredResult(
            status=int(raw[b"result_status"]),
            headers=json.loads(raw[b"result_headers"]),
            payload=raw[b"result_payload"],
            data_format=raw[b"result_format"].decode(),
        )
    return StreamRecord(
        key=key,
        route=raw[b"route"].decode(),
        total=int(raw[b"total"]),
        offset=int(raw[b"offset"]),
        buffer_size=int(raw[b"buffer"]),
        data_format=raw[b"format"].decode(),
        created=int(raw[b"created"]) / 1000,
        updated=int(raw[b"updated"]) / 1000,
        expiry=int(raw[b"expiry"]) / 1000,
        state=StreamState(raw[b"state"].decode()),
        metadata=json.loads(raw[b"metadata"]),
        principal=_text(raw.get(b"principal")),
        checksum=_text(raw.get(b"checksum")),
        result=result,
        sha256=_text(raw.get(b"sha256")),
        attempts=int(raw.get(b"attempts", 0)),
        length_deferred=raw.get(b"deferred") == b"1",
        partial=raw.get(b"partial") == b"1",
        concat=tuple(json.loads(raw[b"concat"])) if b"concat" in raw else None,
        final=_text(raw.get(b"final")),
    )


class RedisStateStore:
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 2.0,
        lease_seconds: float = 3.0,
        max_connections: int = 256,
        pool_wait: float = 30.0,
    ) -> None:
        self.url = url
        self.lease_seconds = lease_seconds
        self.cluster = is_cluster_url(url)
        self._redis: Any
        self._renewals: Any
        if self.cluster:
            # redis-py's cluster client keeps a pool per node, learns the slot map from the
            # node named and follows MOVED/ASK redirections (a failover, a resharding).
            self._redis = RedisCluster.from_url(
                plain_url(url),
                max_connections=max_connections,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=0,
            )
            self._renewals = RedisCluster.from_url(
                plain_url(url),
                max_connections=4,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=0,
            )
        else:
            # A bounded pool that makes callers wait for a free connection: hundreds of
            # streams checkpointing at once queue up instead of failing ("too many
            # connections"). The wait is long: a busy Redis (or a busy event loop) is not an
            # unreachable one; an unreachable one fails fast on ``timeout`` when connecting.
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=pool_wait,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=0,
                retry_on_timeout=False,
                # After Redis restarts, pooled connections to the old process are dead and
                # the pool does not always notice (a reset socket does not read as EOF): a
                # command failing with a connection error is tried once more on a fresh
                # connection. Every command here can be repeated safely; timeouts are not.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
            self._redis = aioredis.Redis(connection_pool=pool)
            # Lease renewal has a connection of its own: it must never queue behind hundreds
            # of checkpoints for a pooled one, or leases lapse under load.
            self._renewals = aioredis.Redis.from_url(
                url,
                max_connections=1,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=0,
            )
        self._create = self._redis.register_script(_CREATE)
        self._delete = self._redis.register_script(_DELETE)
        self._checkpoint = self._redis.register_script(_CHECKPOINT)
        self._complete = self._redis.register_script(_COMPLETE)
        self._finalize = self._redis.register_script(_FINALIZE)
        self._attempt = self._redis.register_script(_ATTEMPT)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._take = self._redis.register_script(_TAKE)
        self._set_total = self._redis.register_script(_SET_TOTAL)
        self._set_final = self._redis.register_script(_SET_FINAL)
        self._batch = _Batch(self._redis)

    def _run(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Awaitable[Any]:
        """A script of the hot path: batched with the others of this turn (one trip), but
        by itself on a cluster, whose pipelines would split the batch by node anyway."""
        if self.cluster:
            return cast(Awaitable[Any], script(keys=keys, args=args))
        return self._batch.script(script, keys, args)

    async def close(self) -> None:
        if self.cluster:
            await self._redis.aclose()
            await self._renewals.aclose()
        else:
            await self._redis.aclose(close_connection_pool=True)
            await self._renewals.aclose(close_connection_pool=True)

    @_unavailable_on_redis_error
    async def ping(self) -> None:
        await self._redis.ping()

    @_unavailable_on_redis_error
    async def create(self, record: StreamRecord, owner: str) -> None:
        fields: dict[str, str | int] = {
            "route": record.route,
            "total": record.total,
            "offset": record.offset,
            "buffer": record.buffer_size,
            "format": record.data_format,
            "state": record.state.value,
            "created": int(record.created * 1000),
            "updated": int(record.updated * 1000),
            "expiry": _ms(record.expiry),
            "metadata": json.dumps(dict(record.metadata)),
        }
        if record.principal is not None:
            fields["principal"] = record.principal
        if record.checksum is not None:
            fields["checksum"] = record.checksum
        if record.length_deferred:
            fields["deferred"] = 1
        if record.partial:
            fields["partial"] = 1
        if record.concat is not None:
            fields["concat"] = json.dumps(list(record.concat))
        pairs: list[str | int] = [item for pair in fields.items() for item in pair]
        keys = [_stream_key(record.key), _lease_key(record.key)]
        args = [owner, _ms(record.expiry), _ms(self.lease_seconds), *pairs]
        deadline = record.updated + record.expiry
        if self.cluster:
            # The record and its lease in one script (one slot), then the index entry.
            await self._create(keys=keys, args=args)
            await self.reschedule(record.key, deadline)
            return
        # One trip (see _Batch): the script (record and lease, one slot), then the index
        # entry, sent together in that order. Should the script fail, the entry names a key
        # with no record, which the sweeper drops when it meets it (as after any expiry).
        created = self._batch.script(self._create, keys, args)
        indexed = self._batch.command(
            "ZADD", expiry_index_key(record.key), int(deadline * 1000), record.key
        )
        await asyncio.gather(created, indexed)

    @_unavailable_on_redis_error
    async def get(self, key: str) -> StreamRecord | None:
        return _record_of(
            key, cast(dict[bytes, bytes], await self._redis.hgetall(_stream_key(key)))
        )

    @_unavailable_on_redis_error
    async def set_final(self, key: str, final: str, replacing: str | None = None) -> str:
        answer = await self._set_final(keys=[_stream_key(key)], args=[final, replacing or ""])
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    @_unavailable_on_redis_error
    async def set_total(self, key: str, total: int) -> str:
        answer = await self._set_total(keys=[_stream_key(key)], args=[total])
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    @_unavailable_on_redis_error
    async def checkpoint(self, key: str, owner: str, offset: int, *, force: bool = False) -> None:
        now_ms = int(time.time() * 1000)
        expiry_ms = await self._run(
            self._checkpoint,
            [_stream_key(key), _lease_key(key)],
            [owner, offset, now_ms, _ms(self.lease_seconds), int(force)],
        )
        _check_owner(key, expiry_ms)

    @_unavailable_on_redis_error
    async def finalize(self, key: str, owner: str, sha256: str) -> int:
        answer = int(
            await self._run(
                self._finalize,
                [_stream_key(key), _lease_key(key)],
                [owner, int(time.time() * 1000), sha256],
            )
        )
        _check_owner(key, answer)
        return answer

    @_unavailable_on_redis_error
    async def begin_attempt(self, key: str, owner: str) -> int:
        answer = int(
            await self._attempt(
                keys=[_stream_key(key), _lease_key(key)], args=[owner, int(time.time() * 1000)]
            )
        )
        _check_owner(key, answer)
        return answer

    @_unavailable_on_redis_error
    async def complete(
        self, key: str, owner: str, result: StoredResult, *, succeeded: bool = True
    ) -> None:
        answer = await self._run(
            self._complete,
            [_stream_key(key), _lease_key(key)],
            [
                owner,
                int(time.time() * 1000),
                1 if succeeded else 2,
                result.status,
                json.dumps(dict(result.headers)),
                result.payload,
                result.data_format,
            ],
        )
        _check_owner(key, answer)

    @_unavailable_on_redis_error
    async def delete(self, key: str) -> bool:
        """Delete the record, its lease and its index entry; True if this call removed the
        record or the entry (so two sweepers never both count one stream)."""
        removed = int(await self._delete(keys=[_stream_key(key), _lease_key(key)]))
        forgotten = await self.forget(key)
        return bool(removed) or forgotten

    @_unavailable_on_redis_error
    async def acquire_lease(self, key: str, owner: str, seconds: float) -> str | None:
        if await self._redis.set(_lease_key(key), owner, nx=True, px=_ms(seconds)):
            return None
        current = await self._redis.get(_lease_key(key))
        if current is None:  # released between the two calls: try once more
            ok = await self._redis.set(_lease_key(key), owner, nx=True, px=_ms(seconds))
            return None if ok else ""
        return cast(bytes, current).decode()

    @_unavailable_on_redis_error
    async def acquire_lease_and_get(
        self, key: str, owner: str, seconds: float
    ) -> tuple[str | None, StreamRecord | None]:
        taken, found = await self._run(
            self._take, [_stream_key(key), _lease_key(key)], [owner, _ms(seconds)]
        )
        if int(taken) != 1:
            return _str(found), None
        fields = cast(list[bytes], found)
        return None, _record_of(key, dict(zip(fields[::2], fields[1::2], strict=True)))

    @_unavailable_on_redis_error
    async def renew_leases(self, leases: Sequence[tuple[str, str]], seconds: float) -> list[bool]:
        if not leases:
            return []
        if self.cluster:
            # The cluster pipeline groups the calls by node: one trip to each master.
            async with self._renewals.pipeline() as pipe:
                for key, owner in leases:
                    pipe.eval(_RENEW, 1, _lease_key(key), owner, _ms(seconds))
                return [bool(answer) for answer in await pipe.execute()]
        async with self._renewals.pipeline(transaction=False) as pipe:
            for key, owner in leases:
                await self._renew(keys=[_lease_key(key)], args=[owner, _ms(seconds)], client=pipe)
            return [bool(answer) for answer in await pipe.execute()]

    @_unavailable_on_redis_error
    async def release_lease(self, key: str, owner: str) -> None:
        await self._release(keys=[_lease_key(key)], args=[owner])

    @_unavailable_on_redis_error
    async def request_takeover(self, instance: str, key: str) -> None:
        await self._redis.publish(f"xs:takeover:{instance}", key)

    async def takeover_requests(self, instance: str) -> AsyncIterator[str]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(f"xs:takeover:{instance}")
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield cast(bytes, message["data"]).decode()
        finally:
            await pubsub.aclose()

    @_unavailable_on_redis_error
    async def expired(self, now: float) -> list[str]:
        deadline = int(now * 1000)
        shards = await asyncio.gather(
            *(self._redis.zrangebyscore(index, "-inf", deadline) for index in EXPIRY_INDEX_KEYS)
        )
        return [_str(k) for keys in shards for k in keys]

    @_unavailable_on_redis_error
    async def forget(self, key: str) -> bool:
        """Drop ``key`` from the expiry index; True if it was there."""
        return bool(await self._redis.zrem(expiry_index_key(key), key))

    @_unavailable_on_redis_error
    async def reschedule(self, key: str, deadline: float) -> None:
        await self._redis.zadd(expiry_index_key(key), {key: int(deadline * 1000)})

    @_unavailable_on_redis_error
    async def active_keys(self) -> list[str]:
        shards = await asyncio.gather(
            *(self._redis.zrange(index, 0, -1) for index in EXPIRY_INDEX_KEYS)
        )
        return [_str(k) for keys in shards for k in keys]

    @_unavailable_on_redis_error
    async def upgrade(self) -> int:
        """Move the members of the unsharded index of older versions into the shards;
        returns how many moved. Safe to run on every start, by every instance at once."""
        if self.cluster:
            return 0  # the cluster support came with the sharded index
        moved = 0
        entries = await self._redis.zrange(LEGACY_EXPIRY_INDEX, 0, -1, withscores=True)
        for member, score in entries:
            key = _str(member)
            await self._redis.zadd(expiry_index_key(key), {key: int(score)}, nx=True)
            await self._redis.zrem(LEGACY_EXPIRY_INDEX, key)
            moved += 1
        return moved

    @_unavailable_on_redis_error
    async def append_events(
        self, entries: Sequence[Mapping[str, str]], *, stream: str, maxlen: int
    ) -> None:
        """Append lifecycle events to the Redis Stream ``stream`` (one key, so one slot in a
        cluster), trimmed to about ``maxlen`` entries."""
        if not self.cluster:
            # With the streams' own calls of this turn (see _Batch), in one trip.
            added = [
                self._batch.command(
                    "XADD",
                    stream,
                    "MAXLEN",
                    "~",
                    maxlen,
                    "*",
                    *(item for pair in entry.items() for item in pair),
                )
                for entry in entries
            ]
            await asyncio.gather(*added)
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xadd(stream, cast(Any, dict(entry)), maxlen=maxlen, approximate=True)
            await pipe.execute()

    @_unavailable_on_redis_error
    async def exists(self, key: str) -> bool:
        return bool(await self._redis.exists(_stream_key(key)))
