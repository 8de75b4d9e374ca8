"""``/healthz`` and ``/readyz``: live while serving; ready only with Redis answering, room
in the data directory and no shutdown under way (503 otherwise, saying why)."""

from __future__ import annotations

import httpx

from tests.conftest import ServerFactory
from xstream_server.server import Server


async def get(server: Server, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
        return await http.get(path)


async def test_ready_when_redis_answers_and_storage_has_room(make_server: ServerFactory) -> None:
    async with make_server() as server:
        assert (await get(server, "/healthz")).json() == {"status": "ok"}
        ready = await get(server, "/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"server": "ok", "redis": "ok", "storage": "ok"}
        assert server.engine is not None
        server.engine.shut_down()  # what SIGTERM does first
        draining = await get(server, "/readyz")
        assert (draining.status_code, draining.json()["checks"]) == (503, {"server": "draining"})
        assert (await get(server, "/healthz")).status_code == 200


async def test_not_ready_without_redis(make_server: ServerFactory) -> None:
    async with make_server(redis_url="redis://127.0.0.1:1/0", redis_timeout=0.5) as server:
        assert (await get(server, "/healthz")).status_code == 200
        answer = await get(server, "/readyz")
        assert answer.status_code == 503
        assert answer.json()["checks"]["redis"].startswith("unreachable")
        assert answer.json()["checks"]["storage"] == "ok"


async def test_not_ready_when_free_space_is_below_the_reserve(make_server: ServerFactory) -> None:
    async with make_server(storage_reserve=1 << 60) as server:
        answer = await get(server, "/readyz")
        assert answer.status_code == 503
        assert answer.json()["checks"]["storage"].startswith("full")
