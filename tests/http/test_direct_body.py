"""Content-Length bodies read from the socket straight into the engine's window (``direct``):
what the connection does around them (keep-alive, a pipelined request right after the
body, ``Expect: 100-continue``, a window that ends before its body), written by hand on
real sockets; and the parts of uvicorn the tap relies on, so that a uvicorn release that
changes them fails here rather than in production."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import os
from collections.abc import AsyncIterator

import httpx
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from xstream_server.server import Server
from xstream_server.transport.http import direct
from xstream_server.transport.http.protocol import BodyHandingProtocol

from ..conftest import ServerFactory
from .conftest import OCTETS, TUS

KiB = 1024
MiB = 1024 * KiB
ROUTE = "/upload-file"


@pytest.fixture
def taps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bodies (their lengths left when tapped) that went past the parser."""
    started: list[int] = []
    original = direct.WindowReader.start

    def start(reader: direct.WindowReader, left: int) -> None:
        started.append(left)
        original(reader, left)

    monkeypatch.setattr(direct.WindowReader, "start", start)
    return started


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    block = await reader.readuntil(b"\r\n\r\n")
    lines = block.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split(" ")[1]), headers


def patch_head(location: str, offset: int, length: int, extra: str = "") -> bytes:
    return (
        f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def head_request(location: str) -> bytes:
    return f"HEAD {location} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n\r\n".encode()


async def create(http: httpx.AsyncClient, length: int) -> str:
    created = await http.post(ROUTE, headers={**TUS, "Upload-Length": str(length)})
    assert created.status_code == 201
    return str(created.headers["location"])


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_uvicorn_still_has_what_the_body_tap_relies_on() -> None:
    for name in (
        "on_message_begin",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
        "connection_lost",
        "eof_received",
        "pause_writing",
        "resume_writing",
        "data_received",
    ):
        assert callable(getattr(HttpToolsProtocol, name)), name
    protocol = inspect.getsource(HttpToolsProtocol)
    for attribute in ("parser", "cycle", "flow", "transport", "headers", "scope"):
        assert f"self.{attribute} = " in protocol, attribute
    cycle = inspect.getsource(RequestResponseCycle.__init__)
    for attribute in (
        "scope",
        "body",
        "more_body",
        "disconnected",
        "response_complete",
        "keep_alive",
        "waiting_for_100_continue",
        "message_event",
    ):
        assert f"self.{attribute} = " in cycle, attribute
    # The body is taken from what receive() would hand over next, and then the request ends
    # as the parser would end it.
    receive = inspect.getsource(RequestResponseCycle.receive)
    assert "self.body" in receive and "self.more_body" in receive
    complete = inspect.getsource(HttpToolsProtocol.on_message_complete)
    assert "more_body = False" in complete and "message_event.set()" in complete
    # uvloop reads into a buffer only for a protocol that is not an asyncio.Protocol.
    assert not isinstance(direct.WindowReader.__new__(direct.WindowReader), asyncio.Protocol)
    assert issubclass(BodyHandingProtocol, HttpToolsProtocol)


async def test_a_body_in_pieces_is_tapped_and_the_request_after_it_is_served(
    server: Server, http: httpx.AsyncClient, taps: list[int]
) -> None:
    data = os.urandom(3 * MiB + 123)  # more than the engine's shared buffer: many reads
    location = await create(http, len(data))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    try:
        writer.write(patch_head(location, 0, len(data)) + data[:1000])
        await writer.drain()
        for start in range(1000, len(data) - 5000, 256 * KiB):
            writer.write(data[start : min(start + 256 * KiB, len(data) - 5000)])
            await writer.drain()
        # The body's last bytes and the next request in one write: the request after the
        # body is parsed as a request, and nothing of it is taken for the body.
        writer.write(data[len(data) - 5000 :] + head_request(location))
        await writer.drain()
        status, headers = await response(reader)
        assert status == 204
        assert headers["upload-offset"] == str(len(data))
        assert headers["x-stream-checksum"] == sha256(data)
        assert "close" not in headers.get("connection", "")
        status, headers = await response(reader)
        assert status == 200
        assert headers["upload-offset"] == str(len(data))
    finally:
        writer.close()
    assert len(taps) == 1 and 0 < taps[0] < len(data)


async def test_keep_alive_patches_in_turn_are_each_tapped(
    server: Server, http: httpx.AsyncClient, taps: list[int]
) -> None:
    data = os.urandom(600 * KiB)
    location = await create(http, len(data))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    try:
        for offset in range(0, len(data), 200 * KiB):
            part = data[offset : offset + 200 * KiB]
            # The body waits for the server's go-ahead, so none of it is parsed before the
            # window is there: each one is tapped whole.
            writer.write(patch_head(location, offset, len(part), "Expect: 100-continue\r\n"))
            await writer.drain()
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
            writer.write(part)
            await writer.drain()
            status, headers = await response(reader)
            assert status == 204
            assert headers["upload-offset"] == str(offset + len(part))
    finally:
        writer.close()
    assert headers["x-stream-checksum"] == sha256(data)
    assert taps == [200 * KiB] * 3


async def test_expect_100_continue_is_answered_before_the_body(
    server: Server, http: httpx.AsyncClient, taps: list[int]
) -> None:
    data = os.urandom(300 * KiB)
    location = await create(http, len(data))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    try:
        writer.write(patch_head(location, 0, len(data), "Expect: 100-continue\r\n"))
        await writer.drain()
        interim = await reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(data)
        await writer.drain()
        status, headers = await response(reader)
    finally:
        writer.close()
    assert status == 204
    assert headers["x-stream-checksum"] == sha256(data)
    assert taps == [len(data)]


async def test_a_chunked_body_goes_through_the_parser(
    http: httpx.AsyncClient, taps: list[int]
) -> None:
    data = os.urandom(200 * KiB)
    location = await create(http, len(data))

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 64 * KiB):
            yield data[start : start + 64 * KiB]

    done = await http.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=pieces())
    assert done.status_code == 204
    assert done.headers["x-stream-checksum"] == sha256(data)
    assert taps == []


async def test_a_tapped_body_cut_short_by_a_takeover_is_not_read_as_requests(
    server: Server, http: httpx.AsyncClient, taps: list[int]
) -> None:
    """The window ends mid-body (a newer PATCH takes the upload over): the old connection
    is answered and closed, and what it sends after is never parsed as a request."""
    data = os.urandom(512 * KiB)
    location = await create(http, len(data))
    key = location.rsplit("/", 1)[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    try:
        writer.write(patch_head(location, 0, len(data), "Expect: 100-continue\r\n"))
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
        writer.write(data[: 128 * KiB])
        await writer.drain()
        assert server.engine is not None
        for _ in range(2000):  # no event to await: the window is the engine's own
            session = server.engine.sessions.get(key)
            if session is not None and session.written >= 128 * KiB:
                break
            await asyncio.sleep(0.005)
        retry = await http.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=data)
        assert retry.status_code == 409
        status, headers = await response(reader)
        assert status == 409
        assert headers["connection"] == "close"
        # Bytes that look like requests, inside the old body: never answered.
        after = b""
        with contextlib.suppress(ConnectionError):
            writer.write(head_request(location) * 4)
            await writer.drain()
            after = await reader.read()
    finally:
        writer.close()
    assert after == b""
    assert taps == [len(data)]
    head = await http.head(location, headers=TUS)
    assert head.headers["upload-offset"] == str(128 * KiB)


async def test_pooled_writes_pause_the_tapped_socket_while_storage_is_behind(
    make_server: ServerFactory, taps: list[int]
) -> None:
    """With writes through the thread pool, a full buffer pauses reading until the other
    is written; the body arrives whole all the same."""
    data = os.urandom(5 * MiB + 77)
    async with make_server(inline_writes=False) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            location = await create(http, len(data))
            reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
            try:
                writer.write(patch_head(location, 0, len(data), "Expect: 100-continue\r\n"))
                await writer.drain()
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
                writer.write(data)
                await writer.drain()
                status, headers = await response(reader)
            finally:
                writer.close()
    assert status == 204, headers
    assert headers.get("x-stream-checksum") == sha256(data), headers
    assert taps == [len(data)]
