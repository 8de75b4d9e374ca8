"""Fixtures of the durability tests (``spawn_server`` and the others come from
``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.durability.support import Link

Connect = Callable[[int], Awaitable[Link]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """``await connect(port)``: a ``Link`` to a server, aborted at teardown if still open."""
    links: list[Link] = []

    async def open_link(port: int) -> Link:
        link = await Link.connect(port)
        links.append(link)
        return link

    yield open_link
    for link in links:
        link.abort()
    for link in links:
        await link.wait_closed(5)
