"""Interoperability with libutp, the reference implementation, through the npm package
``utp-native`` under Node (installed by ``scripts/setup --dev`` in tests/utp_interop)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from xstream_server.utp.socket import UtpClient, open_utp_connection

INTEROP = Path(__file__).resolve().parent.parent / "utp_interop"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="Node is not installed"),
    pytest.mark.skipif(
        not (INTEROP / "node_modules" / "utp-native").is_dir(),
        reason="utp-native is not installed (scripts/setup --dev runs npm ci)",
    ),
]


async def node(*args: str) -> asyncio.subprocess.Process:
    assert NODE is not None
    return await asyncio.create_subprocess_exec(
        NODE,
        str(INTEROP / "peer.js"),
        *args,
        cwd=INTEROP,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def read_json(process: asyncio.subprocess.Process) -> dict[str, object]:
    assert process.stdout is not None
    async with asyncio.timeout(30):
        line = await process.stdout.readline()
    assert line, "peer.js ended without output"
    document: dict[str, object] = json.loads(line)
    return document


@pytest.fixture
async def libutp_echo_server() -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    process = await node("echo-server")
    try:
        port = int(str((await read_json(process))["port"]))
        yield process, port
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_libutp_client_to_the_xstream_server(make_server: ServerFactory) -> None:
    async with make_server(utp_port=0) as server:
        assert server.utp_port is not None
        process = await node("echo-request", str(server.utp_port), "600000")
        result = await read_json(process)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
    assert result["echoed"] is True
    assert "status: 0" in str(result["headers"])
    assert "id: libutp" in str(result["headers"])


async def test_xstream_client_to_a_libutp_server(
    libutp_echo_server: tuple[asyncio.subprocess.Process, int],
) -> None:
    process, port = libutp_echo_server
    data = random.Random(3).randbytes(4 * 1024 * 1024)
    reader, writer = await open_utp_connection("127.0.0.1", port)
    writer.write(data)
    echoed = await reader.readexactly(len(data))
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
    writer.write_eof()
    assert await reader.read() == b""  # libutp ends its side after ours (half-open echo)
    writer.close()
    await writer.wait_closed()
    assert process.stdin is not None
    process.stdin.close()
    assert await read_json(process) == {"received": len(data)}


async def test_several_xstream_connections_over_one_socket_to_libutp(
    libutp_echo_server: tuple[asyncio.subprocess.Process, int],
) -> None:
    _, port = libutp_echo_server
    client = UtpClient(max_connections=5)

    async def one(index: int) -> bool:
        reader, writer = await open_utp_connection("127.0.0.1", port, client=client)
        message = random.Random(index).randbytes(200_000)
        writer.write(message)
        echoed = await reader.readexactly(len(message))
        writer.close()
        await writer.wait_closed()
        return echoed == message

    assert await asyncio.gather(*(one(i) for i in range(5))) == [True] * 5
    await client.close()
