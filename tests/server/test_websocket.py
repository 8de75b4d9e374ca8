"""The packet protocol over WebSocket binary messages at ``/x-stream`` (PROTOCOL §9), driven
by a WebSocket client nobody here wrote (the ``websockets`` package): requests and
pipelining, uploads whose bytes cross message boundaries anywhere, refusals, a text message
refused with 1003, takeover, and streams resumed across TCP and WebSocket both ways."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory
from tests.wire import Wire, status
from xstream_server.protocol import Packet, PacketDecoder, encode_packet
from xstream_server.server import Server

MiB = 1024 * 1024


class WsWire:
    """A WebSocket client speaking packets: what it sends is cut into messages of
    ``message_size`` bytes wherever that falls."""

    def __init__(self, ws: ClientConnection, message_size: int) -> None:
        self.ws = ws
        self.message_size = message_size
        self.decoder = PacketDecoder(payload_limit=lambda _: 1 << 31)

    async def send_raw(self, data: bytes) -> None:
        for start in range(0, len(data), self.message_size):
            await self.ws.send(data[start : start + self.message_size])

    async def send(self, headers: dict[str, str | int], payload: bytes = b"") -> None:
        await self.send_raw(encode_packet(headers, payload))

    async def receive(self) -> Packet:
        while (packet := self.decoder.next_packet()) is None:
            message = await self.ws.recv()
            assert isinstance(message, bytes)
            self.decoder.receive_data(message)
        return packet

    async def request(self, headers: dict[str, str | int], payload: bytes = b"") -> Packet:
        await self.send(headers, payload)
        return await self.receive()


@asynccontextmanager
async def ws_wire(server: Server, message_size: int = 64 * 1024) -> AsyncIterator[WsWire]:
    async with connect(
        f"ws://127.0.0.1:{server.http_port}/x-stream", max_size=None, open_timeout=10
    ) as ws:
        yield WsWire(ws, message_size)


async def test_requests_and_pipelining(server: Server) -> None:
    async with ws_wire(server, message_size=7) as wire:  # packets split across messages
        reply = await wire.request({"route": "/echo", "data-format": "json"}, b'{"a": 1}')
        assert status(reply) == 0
        assert reply.payload == b'{"a": 1}'
        batch = b"".join(
            encode_packet({"route": "/echo", "data-format": "json", "id": i}, b"[%d]" % i)
            for i in range(20)
        )
        await wire.ws.send(batch)  # 20 packets in one message
        for i in range(20):
            answer = await wire.receive()
            assert (answer.headers["id"], answer.payload) == (str(i), b"[%d]" % i)
        missing = await wire.request({"route": "/nowhere"})
        assert status(missing) == 404


@pytest.mark.parametrize("inline_writes", [True, False], ids=["inline", "pooled"])
@pytest.mark.parametrize("message_size", [1000, 64 * 1024, 3 * MiB])
async def test_upload_over_websocket(
    make_server: ServerFactory, inline_writes: bool, message_size: int
) -> None:
    data = os.urandom(5 * MiB + 11)
    async with (
        make_server(inline_writes=inline_writes) as server,
        ws_wire(server, message_size) as wire,
    ):
        accept = await wire.request({"route": "/upload-file", "x-stream": f"{len(data)}:65536"})
        assert status(accept) == 0
        await wire.send_raw(data)
        done = await wire.receive()
        assert status(done) == 0
        assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
        key = accept.headers["x-stream-key"]
        assert (server.settings.data_dir / "streams" / "complete" / key).read_bytes() == data
        # The connection goes on in packet mode.
        assert status(await wire.request({"route": "/echo", "data-format": "json"}, b"1")) == 0


async def test_refusals_carry_their_status(make_server: ServerFactory) -> None:
    async with make_server(storage_reserve=1 << 62) as server, ws_wire(server) as wire:
        full = await wire.request({"route": "/upload-file", "x-stream": "10:65536"})
        assert status(full) == 507
        gone = await wire.request(
            {"route": "/upload-file", "x-stream": "10:65536", "x-stream-key": "nosuchkey"}
        )
        assert status(gone) == 410


async def test_a_text_message_closes_with_1003(server: Server) -> None:
    async with ws_wire(server) as wire:
        await wire.ws.send("route: /echo")
        with pytest.raises(ConnectionClosed) as closed:
            await wire.ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1003


async def test_a_newer_websocket_takes_over_a_stalled_one(server: Server) -> None:
    data = os.urandom(MiB)
    request: dict[str, str | int] = {"route": "/upload-file", "x-stream": f"{len(data)}:65536"}
    async with ws_wire(server) as first, ws_wire(server) as second:
        accept = await first.request(request)
        key = accept.headers["x-stream-key"]
        await first.send_raw(data[:1000])
        resume = await second.request({**request, "x-stream-key": key})
        assert status(resume) == 0
        offset = int(resume.headers["x-stream-offset"])
        assert offset == 1000
        assert status(await first.receive()) == 409
        await second.send_raw(data[offset:])
        done = await second.receive()
        assert status(done) == 0
        assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"


@pytest.mark.parametrize("first", ["tcp", "websocket"])
async def test_a_stream_resumes_across_transports(server: Server, first: str) -> None:
    data = os.urandom(3 * MiB)
    request: dict[str, str | int] = {"route": "/upload-file", "x-stream": f"{len(data)}:65536"}
    half = len(data) // 2
    if first == "tcp":
        async with await Wire.connect(server.port) as tcp:
            accept = await tcp.request(request)
            await tcp.send_raw(data[:half])
    else:
        async with ws_wire(server) as ws:
            accept = await ws.request(request)
            await ws.send_raw(data[:half])
    key = accept.headers["x-stream-key"]
    resume_request = {**request, "x-stream-key": key}
    if first == "tcp":
        async with ws_wire(server) as ws:
            resume = await ws.request(resume_request)
            offset = int(resume.headers["x-stream-offset"])
            await ws.send_raw(data[offset:])
            done = await ws.receive()
    else:
        async with await Wire.connect(server.port) as tcp:
            resume = await tcp.request(resume_request)
            offset = int(resume.headers["x-stream-offset"])
            await tcp.send_raw(data[offset:])
            done = await tcp.receive()
    assert 0 < offset <= half  # durable when the first connection went away
    assert status(done) == 0
    assert done.headers["x-stream-key"] == key
    assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"


async def test_no_compression_is_negotiated(server: Server) -> None:
    """Browsers offer permessage-deflate; compressing file bytes on both ends cost Chromium's
    uploads two thirds of their speed, so the server declines it."""
    async with connect(
        f"ws://127.0.0.1:{server.http_port}/x-stream", compression="deflate", open_timeout=10
    ) as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        wire = WsWire(ws, 64 * 1024)
        assert status(await wire.request({"route": "/echo", "data-format": "json"}, b"1")) == 0
