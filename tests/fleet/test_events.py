"""Lifecycle events: a consumer group on the Redis Stream ``xs:events`` and an ``on_event``
hook both see every event of a crafted run, in order per stream; a hook that raises is
logged and changes nothing; a ``before_create`` hook refuses or shortens uploads."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from tests.conftest import ServerFactory
from tests.durability.conftest import Connect
from tests.durability.support import StateProbe, grant, status, until
from xstream_server import App, CompletedUpload, CreateDecision, CreateOffer, RouteError
from xstream_server.events import EVENT_STREAM, StreamEvent

EXPIRY = 60.0


def events_app(seen: list[StreamEvent], *, broken_hook: bool = False) -> App:
    app = App()

    @app.stream("/ok", expiry=EXPIRY)
    async def ok(upload: CompletedUpload) -> Any:
        return {"size": upload.size}

    @app.stream("/refused")
    async def refused(upload: CompletedUpload) -> Any:
        raise RouteError(400, "not this one")

    @app.on_event
    async def record(event: StreamEvent) -> None:
        seen.append(event)

    if broken_hook:

        @app.on_event
        async def broken(event: StreamEvent) -> None:
            raise RuntimeError("hook bug")

    @app.before_create
    async def policy(offer: CreateOffer) -> CreateDecision | None:
        if offer.metadata.get("name") == "forbidden":
            raise RouteError(403, "no such uploads")
        if offer.metadata.get("name") == "brief":
            return CreateDecision(expiry=5.0, metadata={"name": "brief", "checked": "yes"})
        return None

    return app


def req(route: str, data: bytes, key: str | None = None, name: str = "f") -> dict[str, str | int]:
    headers: dict[str, str | int] = {
        "route": route,
        "x-stream": f"{len(data)}:65536",
        "name": name,
    }
    if key is not None:
        headers["x-stream-key"] = key
    return headers


async def test_a_consumer_group_and_a_hook_see_every_event_in_order(
    make_server: ServerFactory, connect: Connect, redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    await redis.xgroup_create(EVENT_STREAM, "backend", id="0", mkstream=True)
    seen: list[StreamEvent] = []
    data = os.urandom(300_000)
    try:
        async with asyncio.timeout(60), make_server(app=events_app(seen)) as server:
            assert server.engine is not None
            link = await connect(server.port)
            # Completed, over two windows (a checkpoint at each window's end).
            reply = await link.request(req("/ok", data))
            done = reply.headers["x-stream-key"]
            await link.send_raw(data[:100_000])
            link.abort()
            await until(lambda: done not in server.engine.sessions if server.engine else False)
            link = await connect(server.port)
            offset, _ = grant(await link.request(req("/ok", data, done)), len(data))
            await link.send_raw(data[offset:])
            assert status(await link.receive()) == 0
            # Failed: the handler refuses it.
            reply = await link.request(req("/refused", data[:1000]))
            failed = reply.headers["x-stream-key"]
            await link.send_raw(data[:1000])
            assert status(await link.receive()) == 400
            # Terminated by its client; expired in the sweeper's future.
            terminated = (await link.request(req("/ok", data))).headers["x-stream-key"]
            link.abort()
            link = await connect(server.port)
            expired = (await link.request(req("/ok", data))).headers["x-stream-key"]
            link.abort()
            await until(lambda: not server.engine.sessions if server.engine else False)
            assert await server.engine.terminate(terminated) is None
            await server.engine.sweep(now=time.time() + EXPIRY + 1)
            await until(lambda: len(seen) >= 9)  # what the run above emits, delivered

        by_key: dict[str, list[dict[str, str]]] = defaultdict(list)
        ordered: list[tuple[str, str]] = []
        answer: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = cast(
            Any, await redis.xreadgroup("backend", "consumer-1", {EVENT_STREAM: ">"}, count=1000)
        )
        for _stream, entries in answer:
            for entry_id, raw in entries:
                entry = {k.decode(): v.decode() for k, v in raw.items()}
                by_key[entry["key"]].append(entry)
                ordered.append((entry["key"], entry["kind"]))
                await redis.xack(EVENT_STREAM, "backend", entry_id)
        kinds = {key: [e["kind"] for e in entries] for key, entries in by_key.items()}
        # Progress at the checkpoint of the dropped window; the last bytes are recorded with
        # the completion, which says the offset too.
        assert kinds[done] == ["created", "progress", "completed"]
        assert [int(e["offset"]) for e in by_key[done]] == [0, 100_000, len(data)]
        completed = by_key[done][-1]
        assert json.loads(completed["result"]) == {"size": len(data)}
        assert completed["status"] == "0" and completed["route"] == "/ok"
        assert json.loads(completed["metadata"]) == {"name": "f"}
        assert kinds[failed] == ["created", "failed"]
        assert (by_key[failed][-1]["status"], by_key[failed][-1]["final"]) == ("400", "1")
        assert kinds[terminated] == ["created", "terminated"]
        assert kinds[expired] == ["created", "expired"]
        assert set(kinds) == {done, failed, terminated, expired}
        # The hook saw the same events, in the same order.
        assert [(e.key, e.kind.value) for e in seen] == ordered
    finally:
        await redis.aclose()


async def test_a_hook_that_raises_is_logged_and_changes_nothing(
    make_server: ServerFactory, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[StreamEvent] = []
    data = os.urandom(50_000)
    async with asyncio.timeout(30), make_server(app=events_app(seen, broken_hook=True)) as server:
        link = await connect(server.port)
        key = (await link.request(req("/ok", data))).headers["x-stream-key"]
        await link.send_raw(data)
        assert status(await link.receive()) == 0
        await until(lambda: [e.kind.value for e in seen][-1:] == ["completed"])
    assert [e.key for e in seen] == [key] * len(seen)
    failures = [r for r in caplog.records if "event hook" in r.getMessage()]
    assert failures and all(r.exc_info for r in failures)


async def test_before_create_refuses_or_shortens(
    make_server: ServerFactory, connect: Connect, redis_url: str, tmp_path: Path
) -> None:
    seen: list[StreamEvent] = []
    probe = StateProbe(redis_url, tmp_path / "data")
    try:
        async with asyncio.timeout(30), make_server(app=events_app(seen)) as server:
            link = await connect(server.port)
            refused = await link.request(req("/ok", b"x" * 10, name="forbidden"))
            assert (status(refused), refused.headers["message"]) == (403, "no such uploads")
            brief = await link.request(req("/ok", b"x" * 10, name="brief"))
            key = brief.headers["x-stream-key"]
            record = await probe.record(key)
            assert record["expiry"] == "5000"
            assert json.loads(record["metadata"]) == {"name": "brief", "checked": "yes"}
    finally:
        await probe.close()
