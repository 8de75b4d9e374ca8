"""The Redis social store: presence, inboxes (Redis Streams) and sends.

Key schema (``{@name}`` and ``{K}`` are Redis Cluster hash tags: a principal's keys share
one slot, and a send's record shares its stream's slot, see ``state/redis.py``):

``xs:presence:registered``  sorted set, principals by the end of their registration (ms).
``xs:presence:monitors``    sorted set, ``<principal> <holder>`` by the end of a monitor's
                            hold (ms), renewed while the monitor is open; a process that
                            dies leaves holds that lapse by themselves.
``xs:presence:info``        hash, principal → JSON ``{"identity", "seen"}``.
``xs:principals``           set, every principal ever seen (addressees must be in it).
``xs:{@name}:refused``      set, senders ``@name`` takes no files from.
``xs:{@name}:inbox``        stream, ``@name``'s notifications (fields ``kind from payload``);
                            entry ids are the notification ids; trimmed by age on every
                            add (MINID) and expiring as a whole when nothing is added.
``xs:{K}:send``             hash, a send (``from to name size state delivered reason
                            metadata``); TTL: the keep time of the send.
``xs:send:purge``           sorted set, sends whose content may go, by when (ms).
``xs:inbox-wakeup``         pub/sub channel: the principal that got a notification.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .base import StateUnavailable
from .social import InboxEntry, PresenceRow, SendRecord, SendState

__all__ = ["RedisSocialStore"]

REGISTERED: Final = "xs:presence:registered"
MONITORS: Final = "xs:presence:monitors"
INFO: Final = "xs:presence:info"
PRINCIPALS: Final = "xs:principals"
PURGE: Final = "xs:send:purge"
WAKEUP: Final = "xs:inbox-wakeup"

# KEYS: send. ARGV: new state, reason (or ''), then the states it may move from.
_SET_STATE: Final = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
for i = 3, #ARGV do
  if ARGV[i] == state then
    redis.call('HSET', KEYS[1], 'state', ARGV[1])
    if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'reason', ARGV[2]) end
    return state
  end
end
return state
"""

# KEYS: send. ARGV: delivered bytes (kept only if larger).
_DELIVERED: Final = """
local current = redis.call('HGET', KEYS[1], 'delivered')
if not current then return 0 end
if tonumber(ARGV[1]) > tonumber(current) then
  redis.call('HSET', KEYS[1], 'delivered', ARGV[1])
end
return 1
"""


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _inbox(name: str) -> str:
    return f"xs:{{{name}}}:inbox"


def _refused(name: str) -> str:
    return f"xs:{{{name}}}:refused"


def _send(key: str) -> str:
    return f"xs:{{{key}}}:send"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisSocialStore:
    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._set_state = self._redis.register_script(_SET_STATE)
        self._delivered = self._redis.register_script(_DELIVERED)

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)

    # ---- presence ------------------------------------------------------------------------
    async def register(self, name: str, identity: str | None, now: float, expires: float) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(REGISTERED, {name: _ms(expires)})
                pipe.hset(INFO, name, json.dumps({"identity": identity, "seen": now}))
                pipe.sadd(PRINCIPALS, name)
                await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def hold_monitor(self, name: str, holder: str, now: float, until: float) -> None:
        try:
            info = await self._redis.hget(INFO, name)
            identity = json.loads(info)["identity"] if info else None
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(MONITORS, {f"{name} {holder}": _ms(until)})
                pipe.hset(INFO, name, json.dumps({"identity": identity, "seen": now}))
                pipe.sadd(PRINCIPALS, name)
                await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def drop_monitor(self, name: str, holder: str) -> None:
        try:
            await self._redis.zrem(MONITORS, f"{name} {holder}")
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def online(self, now: float, names: Sequence[str] | None = None) -> list[PresenceRow]:
        cutoff = _ms(now)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(REGISTERED, "-inf", f"({cutoff}")
                pipe.zremrangebyscore(MONITORS, "-inf", f"({cutoff}")
                pipe.zrange(REGISTERED, 0, -1)
                pipe.zrange(MONITORS, 0, -1)
                _, _, registered, monitors = await pipe.execute()
            found = {_text(n) for n in registered}
            found |= {_text(m).partition(" ")[0] for m in monitors}
            if names is not None:
                found &= set(names)
            ordered = sorted(found)
            infos = await self._redis.hmget(INFO, ordered) if ordered else []
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc
        rows = []
        for name, raw in zip(ordered, infos, strict=True):
            info = json.loads(raw) if raw else {}
            rows.append(PresenceRow(name, info.get("identity"), float(info.get("seen", 0))))
        return rows

    async def known(self, name: str) -> bool:
        try:
            return bool(await self._redis.sismember(PRINCIPALS, name))
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def set_refused(self, name: str, senders: Sequence[str], refused: bool) -> None:
        if not senders:
            return
        try:
            if refused:
                await self._redis.sadd(_refused(name), *senders)
            else:
                await self._redis.srem(_refused(name), *senders)
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def refuses(self, name: str, sender: str) -> bool:
        try:
            return bool(await self._redis.sismember(_refused(name), sender))
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    # ---- notifications -------------------------------------------------------------------
    async def add_notification(
        self, name: str, kind: str, sender: str | None, payload: Any, keep: float
    ) -> str:
        fields = {"kind": kind, "from": sender or "", "payload": json.dumps(payload)}
        try:
            time_ms = int((await self._redis.time())[0]) * 1000
            async with self._redis.pipeline(transaction=True) as pipe:
                # Entries older than ``keep`` go with every add; the whole inbox expires
                # when nothing was added for that long.
                pipe.xadd(
                    _inbox(name),
                    cast(Any, fields),
                    minid=str(time_ms - _ms(keep)),
                    approximate=False,
                )
                pipe.pexpire(_inbox(name), _ms(keep))
                entry_id, _ = await pipe.execute()
            await self._redis.publish(WAKEUP, name)
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc
        return _text(entry_id)

    async def notifications(
        self, name: str, after: str | None, count: int, oldest: float
    ) -> list[InboxEntry]:
        start = f"({after}" if after else "-"
        try:
            entries = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                await self._redis.xrange(_inbox(name), start, "+", count=count),
            )
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc
        result = []
        for raw_id, raw in entries:
            entry_id = _text(raw_id)
            if int(entry_id.partition("-")[0]) < _ms(oldest):
                continue
            sender = _text(raw[b"from"])
            result.append(
                InboxEntry(
                    entry_id, _text(raw[b"kind"]), sender or None, json.loads(raw[b"payload"])
                )
            )
        return result

    async def acknowledge(self, name: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        try:
            return int(await self._redis.xdel(_inbox(name), *ids))
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def wakeups(self) -> AsyncIterator[str]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(WAKEUP)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield _text(message["data"])
        except (RedisConnectionError, OSError) as exc:
            raise StateUnavailable(f"redis: {exc}") from exc
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    # ---- sends ---------------------------------------------------------------------------
    async def create_send(self, record: SendRecord, keep: float) -> None:
        fields = {
            "from": record.sender,
            "to": record.to,
            "name": record.name,
            "size": record.size,
            "state": record.state.value,
            "delivered": record.delivered,
            "metadata": json.dumps(dict(record.metadata or {})),
        }
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(_send(record.key), mapping=cast(Any, fields))
                pipe.pexpire(_send(record.key), _ms(keep))
                await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def get_send(self, key: str) -> SendRecord | None:
        try:
            raw = cast(dict[bytes, bytes], await self._redis.hgetall(_send(key)))
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc
        if not raw or b"state" not in raw:
            return None
        return SendRecord(
            key=key,
            sender=raw[b"from"].decode(),
            to=raw[b"to"].decode(),
            name=raw[b"name"].decode(),
            size=int(raw[b"size"]),
            state=SendState(raw[b"state"].decode()),
            delivered=int(raw.get(b"delivered", 0)),
            reason=raw[b"reason"].decode() if b"reason" in raw else None,
            metadata=json.loads(raw.get(b"metadata", b"{}")),
        )

    async def set_send_state(
        self, key: str, state: SendState, expected: Sequence[SendState], reason: str | None = None
    ) -> SendState | None:
        try:
            before = await self._set_state(
                keys=[_send(key)], args=[state.value, reason or "", *expected]
            )
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc
        return None if before is None else SendState(_text(before))

    async def count_delivered(self, key: str, delivered: int) -> None:
        try:
            await self._delivered(keys=[_send(key)], args=[delivered])
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def schedule_purge(self, key: str, at: float) -> None:
        try:
            await self._redis.zadd(PURGE, {key: _ms(at)})
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def due_purges(self, now: float) -> list[str]:
        try:
            keys = cast(list[bytes], await self._redis.zrangebyscore(PURGE, "-inf", _ms(now)))
            return [_text(k) for k in keys]
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    async def forget_send(self, key: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(PURGE, key)
                pipe.delete(_send(key))
                await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc
