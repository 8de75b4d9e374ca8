"""Fixtures of the people tests: a server with the people routes, and clients by name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from xstream_server.client.people import People, people
from xstream_server.server import Server

from ..conftest import ServerFactory
from .apps import bearer, make_app

Login = Callable[[str], Awaitable[People]]


@pytest.fixture
def make_people_server(make_server: ServerFactory) -> Callable[..., Any]:
    def start(**overrides: Any) -> Any:
        app, _ = make_app()
        return make_server(app, **overrides)

    return start


@pytest.fixture
async def people_server(make_people_server: Callable[..., Any]) -> AsyncIterator[Server]:
    async with make_people_server() as running:
        yield running


@pytest.fixture
async def login(people_server: Server) -> AsyncIterator[Login]:
    """``await login("@bob")``: a connection of @bob's (closed at the end)."""
    async with AsyncExitStack() as stack:

        async def open_as(name: str) -> People:
            me = await people(f"127.0.0.1:{people_server.port}", authorization=bearer(name))
            stack.push_async_callback(_close, me)
            return me

        yield open_as


async def _close(me: People) -> None:
    if me.connection.is_open:
        me.connection.abort()
