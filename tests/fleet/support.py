"""Helpers of the fleet tests: whole uploads over the wire, and finding which process of a
supervised server holds a connection."""

from __future__ import annotations

import json
from typing import Any, Final

import psutil

from tests.conftest import ServerProcess
from tests.durability.support import Link, grant, sha256, status

ROUTE: Final = "/upload-file"
APP: Final = ("--app", "tests.fleet.app:app")


def request(data: bytes, key: str | None = None) -> dict[str, str | int]:
    headers: dict[str, str | int] = {"route": ROUTE, "x-stream": f"{len(data)}:65536"}
    if key is not None:
        headers["x-stream-key"] = key
    return headers


async def start(port: int, data: bytes, upto: int) -> tuple[Link, str]:
    """Open a stream and send its first ``upto`` bytes; the link stays open."""
    link = await Link.connect(port)
    accept = await link.request(request(data))
    assert status(accept) == 0, accept.headers
    await link.send_raw(data[:upto])
    return link, accept.headers["x-stream-key"]


async def finish(port: int, data: bytes, key: str | None = None) -> dict[str, Any]:
    """Send what the server lacks (all of it for a new stream); the completion's JSON."""
    async with await Link.connect(port) as link:
        reply = await link.request(request(data, key))
        assert status(reply) == 0, reply.headers
        offset, window = grant(reply, len(data))
        assert offset + window == len(data)
        await link.send_raw(data[offset:])
        done = await link.receive()
        assert status(done) == 0, done.headers
        assert done.headers["x-stream-checksum"] == sha256(data)
        result: dict[str, Any] = json.loads(done.payload)
        return result


def workers(server: ServerProcess) -> list[psutil.Process]:
    """The supervisor's worker processes (its Python children)."""
    assert server.process is not None
    found = []
    for child in psutil.Process(server.process.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "xstream_server.cli.server" in " ".join(
                child.cmdline()
            ):
                found.append(child)
        except psutil.Error:  # gone, or a zombie not yet reaped
            continue
    return found


def holder(server: ServerProcess, link: Link) -> psutil.Process:
    """The worker whose socket is the other end of ``link``."""
    assert link.transport is not None
    local_port = link.transport.get_extra_info("sockname")[1]
    for worker in workers(server):
        for connection in worker.net_connections("tcp"):
            if connection.raddr and connection.raddr.port == local_port:
                return worker
    raise AssertionError("no worker holds the connection")
