"""No byte misplaced, no request left unanswered (issue 13, findings 2 and 6): raw bytes sent
before the accept reply, of any size, land at their offsets; user code that fails on a
stream request is answered with 500 at once; a JSON payload nested past the parser's depth
is answered with 400; the connection keeps serving after each."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.wire import Wire, status
from xstream_server import App, CompletedUpload, StreamOffer
from xstream_server.protocol import encode_packet

B = 64 * 1024  # the buffer size /upload-file grants for x-stream: T:65536
TOTAL = 5 * B + 123


@pytest.mark.parametrize("inline_writes", [True, False], ids=["inline", "pooled"])
@pytest.mark.parametrize("early", [1, B - 1, B, B + 1, 3 * B + 5, TOTAL])
async def test_raw_bytes_sent_before_the_accept_land_at_their_offsets(
    make_server: ServerFactory, inline_writes: bool, early: int
) -> None:
    data = os.urandom(TOTAL)
    request = encode_packet({"route": "/upload-file", "x-stream": f"{TOTAL}:{B}"})
    async with (
        make_server(inline_writes=inline_writes) as server,
        await Wire.connect(server.port) as wire,
    ):
        await wire.send_raw(request + data[:early])  # in breach of §3.2, in one write
        accept = await wire.receive()
        assert status(accept) == 0
        assert accept.headers["x-stream"] == f"0:{B}"
        await wire.send_raw(data[early:])
        done = await wire.receive()
        assert status(done) == 0, done.headers
        assert done.headers["x-stream"] == "0:0"
        assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
        key = accept.headers["x-stream-key"]
        assert (server.settings.data_dir / "streams" / "complete" / key).read_bytes() == data
        # The connection is back in packet mode and serves the next request.
        echo = await wire.request({"route": "/echo", "data-format": "json"}, b"[1]")
        assert status(echo) == 0


async def test_early_bytes_of_a_window_then_a_resume_from_the_durable_offset(
    make_server: ServerFactory,
) -> None:
    """The client leaves after its early bytes: they are durable, and a resume starts
    exactly behind them."""
    data = os.urandom(TOTAL)
    early = 2 * B + 7
    request = {"route": "/upload-file", "x-stream": f"{TOTAL}:{B}"}
    async with make_server() as server:
        async with await Wire.connect(server.port) as wire:
            await wire.send_raw(encode_packet(request) + data[:early])
            accept = await wire.receive()
            key = accept.headers["x-stream-key"]
        async with await Wire.connect(server.port) as wire:
            # The first connection's window is settled when the server sees it close;
            # the resume waits for the lease (PROTOCOL §3.4) and gets the durable offset.
            resume = await wire.request({**request, "x-stream-key": key})
            assert status(resume) == 0
            assert resume.headers["x-stream-offset"] == str(early)
            await wire.send_raw(data[early:])
            done = await wire.receive()
    assert status(done) == 0
    assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"


def _failing_app() -> App:
    app = App()

    async def accept(offer: StreamOffer) -> int:
        raise ValueError("the quota service is down")

    async def auth(authorization: str | None) -> str:
        raise KeyError("the token cache is down")

    @app.stream("/hook", accept=accept)
    async def hook_done(upload: CompletedUpload) -> Any:
        return None

    @app.stream("/auth", auth=auth)
    async def auth_done(upload: CompletedUpload) -> Any:
        return None

    return app


@pytest.mark.parametrize("route", ["/hook", "/auth"])
async def test_user_code_failing_on_a_stream_request_is_answered_500(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture, route: str
) -> None:
    caplog.set_level(logging.ERROR, "xstream")
    async with (
        make_server(app=_failing_app()) as server,
        await Wire.connect(server.port) as wire,
    ):
        reply = await wire.request({"route": route, "x-stream": "10:10"}, b"")
        assert status(reply) == 500
        assert reply.headers["x-stream"] == "-1"
        # The same connection goes on: the stream request was answered, not dropped.
        again = await wire.request({"route": route, "x-stream": "10:10"})
        assert status(again) == 500
    logged = [record for record in caplog.records if record.exc_info]
    assert logged, "the failure is logged with its traceback"
    assert "is down" in str(logged[0].exc_info[1])  # type: ignore[index]


@pytest.mark.parametrize("route", ["/stream-status", "/echo"])
async def test_deeply_nested_json_gets_400(server: Any, route: str) -> None:
    nested = b"[" * 20_000 + b"]" * 20_000
    async with await Wire.connect(server.port) as wire:
        reply = await wire.request({"route": route, "data-format": "json"}, nested)
        assert status(reply) == 400
        ok = await wire.request({"route": "/echo", "data-format": "json"}, json.dumps([1]).encode())
        assert status(ok) == 0
