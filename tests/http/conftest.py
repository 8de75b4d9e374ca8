"""HTTP tests: a server in this process with its HTTP face on a free port, and an httpx
client on it (real sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from xstream_server.server import Server

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


def base_url(server: Server) -> str:
    return f"http://127.0.0.1:{server.http_port}"


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url(server), timeout=30) as client:
        yield client
