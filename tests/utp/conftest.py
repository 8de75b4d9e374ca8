"""Fixtures of the uTP tests."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from xstream_server.server import Server


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
