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
``xs:expiry``      sorted set, streams scored by the earliest time they can expire (epoch
                   ms); the sweeper's work list. Scores are set at creation and moved on by
                   the sweeper when it finds a stream renewed since (checkpoints renew only
                   the record, to keep the hot path at one Redis trip); complete streams
                   leave the set when the sweeper meets them.
``xs:takeover:<instance>``  pub/sub channel: keys another instance wants this one to release.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from functools import wraps
from typing import Any, Final, ParamSpec, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import LeaseLost, StateUnavailable, StoredResult, StreamRecord, StreamState

__all__ = ["RedisStateStore"]

EXPIRY_INDEX: Final = "xs:expiry"

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
return tonumber(expiry)
"""

# KEYS: stream, lease. ARGV: owner, now_ms, sha256.
_FINALIZE: Final = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local expiry = redis.call('HGET', KEYS[1], 'expiry')
if not expiry then return -2 end
redis.call('HSET', KEYS[1], 'state', 'finalized', 'offset', redis.call('HGET', KEYS[1], 'total'),
  'updated', ARGV[2], 'sha256', ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(expiry) * 2)
return tonumber(expiry)
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

# KEYS: stream (a partial one). ARGV: the final stream's key, the one it may replace.
_SET_FINAL: Final = """
local fields = redis.call('HMGET', KEYS[1], 'route', 'final')
if not fields[1] then return 'gone' end
if fields[2] and fields[2] ~= ARGV[1] and fields[2] ~= ARGV[2] then return 'taken' end
redis.call('HSET', KEYS[1], 'final', ARGV[1])
return 'ok'
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


def _unavailable_on_redis_error(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    @wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StateUnavailable(f"redis unreachable: {exc}") from exc
        except RedisError as exc:
            raise StateUnavailable(f"redis error: {exc}") from exc

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
        # A bounded pool that makes callers wait for a free connection: hundreds of streams
        # checkpointing at once queue up instead of failing ("too many connections"). The
        # wait is long: a busy Redis (or a busy event loop) is not an unreachable one; an
        # unreachable one fails fast on ``timeout`` when connecting.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_wait,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=0,
            retry_on_timeout=False,
            # After Redis restarts, pooled connections to the old process are dead and the
            # pool does not always notice (a reset socket does not read as EOF): a command
            # failing with a connection error is tried once more on a fresh connection.
            # Every command here can be repeated safely; timeouts are not retried.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        # Lease renewal has a connection of its own: it must never queue behind hundreds
        # of checkpoints for a pooled one, or leases lapse under load.
        self._renewals: aioredis.Redis = aioredis.Redis.from_url(
            url,
            max_connections=1,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=0,
        )
        self._checkpoint = self._redis.register_script(_CHECKPOINT)
        self._complete = self._redis.register_script(_COMPLETE)
        self._finalize = self._redis.register_script(_FINALIZE)
        self._attempt = self._redis.register_script(_ATTEMPT)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._set_total = self._redis.register_script(_SET_TOTAL)
        self._set_final = self._redis.register_script(_SET_FINAL)

    async def close(self) -> None:
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
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(_stream_key(record.key), mapping=cast(Any, fields))
            pipe.pexpire(_stream_key(record.key), _ms(record.expiry))
            pipe.zadd(EXPIRY_INDEX, {record.key: int((record.updated + record.expiry) * 1000)})
            pipe.set(_lease_key(record.key), owner, px=_ms(self.lease_seconds))
            await pipe.execute()

    @_unavailable_on_redis_error
    async def get(self, key: str) -> StreamRecord | None:
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(_stream_key(key)))
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
        expiry_ms = await self._checkpoint(
            keys=[_stream_key(key), _lease_key(key)],
            args=[owner, offset, now_ms, _ms(self.lease_seconds), int(force)],
        )
        _check_owner(key, expiry_ms)

    @_unavailable_on_redis_error
    async def finalize(self, key: str, owner: str, sha256: str) -> None:
        answer = await self._finalize(
            keys=[_stream_key(key), _lease_key(key)],
            args=[owner, int(time.time() * 1000), sha256],
        )
        _check_owner(key, answer)

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
        answer = await self._complete(
            keys=[_stream_key(key), _lease_key(key)],
            args=[
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
    async def delete(self, key: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(_stream_key(key), _lease_key(key))
            pipe.zrem(EXPIRY_INDEX, key)
            await pipe.execute()

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
    async def renew_leases(self, leases: Sequence[tuple[str, str]], seconds: float) -> list[bool]:
        if not leases:
            return []
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
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    @_unavailable_on_redis_error
    async def expired(self, now: float) -> list[str]:
        keys = await self._redis.zrangebyscore(EXPIRY_INDEX, "-inf", int(now * 1000))
        return [_str(k) for k in keys]

    @_unavailable_on_redis_error
    async def forget(self, key: str) -> None:
        await self._redis.zrem(EXPIRY_INDEX, key)

    @_unavailable_on_redis_error
    async def reschedule(self, key: str, deadline: float) -> None:
        await self._redis.zadd(EXPIRY_INDEX, {key: int(deadline * 1000)})

    @_unavailable_on_redis_error
    async def active_keys(self) -> list[str]:
        return [_str(k) for k in await self._redis.zrange(EXPIRY_INDEX, 0, -1)]

    @_unavailable_on_redis_error
    async def exists(self, key: str) -> bool:
        return bool(await self._redis.exists(_stream_key(key)))
