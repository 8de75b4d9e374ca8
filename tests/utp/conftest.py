"""Fixtures of the uTP tests."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from xstream_server.server import Server
from xstream_server.utp.socket import UtpEndpoint


def random_file(directory: Path, size: int, seed: int = 1) -> tuple[Path, str]:
    path = directory / f"random-{size}-{seed}.bin"
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def utp_address(server: Server) -> str:
    assert server.utp_port is not None
    return f"127.0.0.1:{server.utp_port}"


@pytest.fixture
async def utp_server(make_server: ServerFactory) -> AsyncIterator[Server]:
    async with make_server(utp_port=0) as running:
        yield running


@pytest.fixture(autouse=True)
async def close_udp_sockets(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Close every uTP socket a test left open (a test that failed half-way): uvloop's
    loop.close() hangs on an unclosed UDP transport when ResourceWarning is an error."""
    endpoints: list[UtpEndpoint] = []
    original = UtpEndpoint.connection_made

    def connection_made(self: UtpEndpoint, transport: object) -> None:
        endpoints.append(self)
        original(self, transport)  # type: ignore[arg-type]

    monkeypatch.setattr(UtpEndpoint, "connection_made", connection_made)
    yield
    for endpoint in endpoints:
        if endpoint.transport is not None and not endpoint.transport.is_closing():
            endpoint.close()
