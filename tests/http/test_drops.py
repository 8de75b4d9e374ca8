"""A PATCH whose connection drops keeps every byte that arrived (the next HEAD reports it),
and a newer PATCH takes an upload over from an older one that stalled."""

from __future__ import annotations

import asyncio
import hashlib
import os

import httpx

from xstream_server.server import Server

from ..conftest import ServerFactory
from .conftest import OCTETS, TUS

KiB = 1024


async def _arrived(server: Server, key: str, count: int) -> None:
    """Until the server's window on ``key`` has written ``count`` bytes (no event to await:
    the window is the engine's own)."""
    assert server.engine is not None
    for _ in range(2000):
        session = server.engine.sessions.get(key)
        if session is not None and session.written >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{count} bytes never arrived")


async def _settled(server: Server, key: str) -> None:
    assert server.engine is not None
    for _ in range(2000):
        if key not in server.engine.sessions:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the window never settled")


async def _start_patch(
    server: Server, location: str, offset: int, total: int, sent: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A PATCH announcing ``total - offset`` bytes that sends only ``sent``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n"
        f"Content-Length: {total - offset}\r\n\r\n"
    )
    writer.write(head.encode() + sent)
    await writer.drain()
    return reader, writer


async def test_dropped_patch_keeps_what_arrived(server: Server, http: httpx.AsyncClient) -> None:
    data = os.urandom(256 * KiB)
    created = await http.post(ROUTE, headers={**TUS, "Upload-Length": str(len(data))})
    location = created.headers["location"]
    key = location.rsplit("/", 1)[1]
    _, writer = await _start_patch(server, location, 0, len(data), data[: 100 * KiB])
    await _arrived(server, key, 100 * KiB)
    writer.transport.abort()  # the network goes away mid-body
    await _settled(server, key)
    head = await http.head(location, headers=TUS)
    assert head.headers["upload-offset"] == str(100 * KiB)
    done = await http.patch(
        location, headers={**OCTETS, "Upload-Offset": str(100 * KiB)}, content=data[100 * KiB :]
    )
    assert done.status_code == 204
    assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"


async def test_newer_patch_takes_over_a_stalled_one(
    server: Server, http: httpx.AsyncClient
) -> None:
    data = os.urandom(256 * KiB)
    created = await http.post(ROUTE, headers={**TUS, "Upload-Length": str(len(data))})
    location = created.headers["location"]
    key = location.rsplit("/", 1)[1]
    reader, writer = await _start_patch(server, location, 0, len(data), data[: 64 * KiB])
    await _arrived(server, key, 64 * KiB)
    # The client believes nothing arrived: its PATCH from 0 stops the stalled one, whose
    # bytes are made durable first, so it is told the real offset.
    retry = await http.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=data)
    assert retry.status_code == 409
    head = await http.head(location, headers=TUS)
    assert head.headers["upload-offset"] == str(64 * KiB)
    old_answer = await reader.read()  # the stalled PATCH is answered, then closed
    assert old_answer.startswith(b"HTTP/1.1 409")
    assert b"upload-offset: 65536" in old_answer.lower()
    writer.close()
    done = await http.patch(
        location, headers={**OCTETS, "Upload-Offset": str(64 * KiB)}, content=data[64 * KiB :]
    )
    assert done.status_code == 204
    assert done.headers["upload-offset"] == str(len(data))
    assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"


ROUTE = "/upload-file"


async def test_shutdown_answers_a_patch_in_flight_with_503_and_its_offset(
    make_server: ServerFactory,
) -> None:
    data = os.urandom(256 * KiB)
    async with make_server() as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            created = await http.post(ROUTE, headers={**TUS, "Upload-Length": str(len(data))})
        location = created.headers["location"]
        key = location.rsplit("/", 1)[1]
        reader, writer = await _start_patch(server, location, 0, len(data), data[: 64 * KiB])
        await _arrived(server, key, 64 * KiB)
        closing = asyncio.get_running_loop().create_task(server.close())
        answer = await reader.read()
        await closing
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503")
        assert b"upload-offset: 65536" in answer.lower()
    async with make_server() as server:  # the bytes are durable across the restart
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            head = await http.head(location, headers=TUS)
    assert head.headers["upload-offset"] == str(64 * KiB)


async def test_stalled_body_is_answered_408_with_what_arrived(
    make_server: ServerFactory,
) -> None:
    data = os.urandom(100 * KiB)
    async with make_server(raw_stall_timeout=0.3) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            created = await http.post(ROUTE, headers={**TUS, "Upload-Length": str(len(data))})
            location = created.headers["location"]
            reader, writer = await _start_patch(server, location, 0, len(data), data[: 40 * KiB])
            answer = await reader.read()  # nothing more is sent: the server gives up
            writer.close()
            assert answer.startswith(b"HTTP/1.1 408")
            assert b"upload-offset: 40960" in answer.lower()
            head = await http.head(location, headers=TUS)
            assert head.headers["upload-offset"] == str(40 * KiB)


async def test_no_room_is_507_and_too_many_streams_429(make_server: ServerFactory) -> None:
    async with make_server(storage_reserve=1 << 62) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            full = await http.post(ROUTE, headers={**OCTETS, "Upload-Length": "3"}, content=b"abc")
            assert full.status_code == 507
            assert full.headers["location"].startswith(ROUTE + "/")  # created: resumable
    async with make_server(max_streams_per_client=1) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            first = await http.post(ROUTE, headers={**TUS, "Upload-Length": "100"})
            second = await http.post(ROUTE, headers={**TUS, "Upload-Length": "100"})
            key = first.headers["location"].rsplit("/", 1)[1]
            _, writer = await _start_patch(server, first.headers["location"], 0, 100, b"x")
            await _arrived(server, key, 1)  # one stream open from this address
            busy = await http.patch(
                second.headers["location"],
                headers={**OCTETS, "Upload-Offset": "0"},
                content=b"y" * 100,
            )
            assert busy.status_code == 429
            writer.close()
