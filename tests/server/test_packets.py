"""End to end over real sockets: ordinary requests and every packet-level status."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.wire import Wire, status
from xstream_server import App, RequestContext, RouteError, Status
from xstream_server.protocol import encode_packet
from xstream_server.server import Server


async def test_echo_round_trip(server: Server) -> None:
    async with await Wire.connect(server.port) as wire:
        reply = await wire.request(
            {"route": "/echo", "id": "r1", "data-format": "json"}, b'{"hello": [1, 2]}'
        )
    assert status(reply) == 0
    assert reply.headers["id"] == "r1"
    assert reply.headers["data-format"] == "json"
    assert json.loads(reply.payload) == {"hello": [1, 2]}


async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    async with await Wire.connect(server.port) as wire:
        count = 200
        wire.writer.write(
            b"".join(
                encode_packet(
                    {"route": "/echo", "id": f"p{i}", "data-format": "json"},
                    json.dumps({"n": i}).encode(),
                )
                for i in range(count)
            )
        )
        replies = [await wire.receive() for _ in range(count)]
    assert [r.headers["id"] for r in replies] == [f"p{i}" for i in range(count)]
    assert [json.loads(r.payload)["n"] for r in replies] == list(range(count))


async def test_invalid_json_gets_400_and_connection_goes_on(server: Server) -> None:
    async with await Wire.connect(server.port) as wire:
        reply = await wire.request({"route": "/echo", "id": "j", "data-format": "json"}, b"{nope")
        assert status(reply) == 400
        assert reply.headers["id"] == "j"
        assert "message" in reply.headers
        again = await wire.request({"route": "/echo", "data-format": "json"}, b"[]")
        assert status(again) == 0


async def test_invalid_utf8_text_gets_400(make_server: ServerFactory) -> None:
    app = App()

    @app.request("/text")
    async def text(request: RequestContext) -> Any:
        return request.content

    async with make_server(app=app) as running, await Wire.connect(running.port) as wire:
        reply = await wire.request({"route": "/text", "data-format": "text"}, b"\xff\xfe")
        assert status(reply) == 400
        good = await wire.request({"route": "/text", "data-format": "text"}, "žluť".encode())
        assert status(good) == 0
        assert good.payload.decode() == "žluť"


async def test_malformed_header_gets_400_then_close(server: Server) -> None:
    async with await Wire.connect(server.port) as wire:
        await wire.send_frame(b"route /echo")  # no colon
        reply = await wire.receive()
        assert status(reply) == 400
        assert await wire.closed_by_server()


async def test_missing_route_gets_400(server: Server) -> None:
    async with await Wire.connect(server.port) as wire:
        reply = await wire.request({"id": "x"})
        assert status(reply) == 400


async def test_bad_x_stream_value_gets_400_with_minus_one(server: Server) -> None:
    async with await Wire.connect(server.port) as wire:
        reply = await wire.request({"route": "/upload-file", "x-stream": "0:4096"})
        assert status(reply) == 400
        assert reply.headers["x-stream"] == "-1"


async def test_unknown_route_gets_404(server: Server) -> None:
    async with await Wire.connect(server.port) as wire:
        reply = await wire.request({"route": "/nowhere", "id": "n"})
        assert status(reply) == 404
        assert reply.headers["id"] == "n"
        stream = await wire.request({"route": "/nowhere", "x-stream": "10:10"})
        assert status(stream) == 404
        assert stream.headers["x-stream"] == "-1"


async def test_stream_on_request_route_gets_405(server: Server) -> None:
    async with await Wire.connect(server.port) as wire:
        reply = await wire.request({"route": "/echo", "x-stream": "10:10"})
        assert status(reply) == 405
        assert reply.headers["x-stream"] == "-1"
        plain = await wire.request({"route": "/upload-file"}, b"data")
        assert status(plain) == 405


async def test_idle_connection_gets_408(make_server: ServerFactory) -> None:
    async with make_server(idle_timeout=0.3) as running, await Wire.connect(running.port) as wire:
        reply = await wire.receive(timeout=10)
        assert status(reply) == 408
        assert await wire.closed_by_server()


async def test_payload_over_limit_gets_413_before_it_is_sent(
    make_server: ServerFactory,
) -> None:
    async with make_server(max_payload=1024) as running, await Wire.connect(running.port) as wire:
        # Only the prefix and the header block go out: the server must not wait for the
        # 10 MB it is going to refuse.
        await wire.send_frame(b"route: /echo\ndata-format: json", declared=10_000_000)
        reply = await wire.receive(timeout=10)
        assert status(reply) == 413
        assert await wire.closed_by_server()


async def test_route_payload_limit_applies(make_server: ServerFactory) -> None:
    app = App()

    @app.request("/small", max_payload=8)
    async def small(request: RequestContext) -> Any:
        return request.payload

    async with make_server(app=app) as running:
        async with await Wire.connect(running.port) as wire:
            assert status(await wire.request({"route": "/small"}, b"12345678")) == 0
        async with await Wire.connect(running.port) as wire:
            assert status(await wire.request({"route": "/small"}, b"123456789")) == 413


async def test_header_block_over_limit_gets_431(make_server: ServerFactory) -> None:
    async with make_server(max_header_block=1024) as running:
        async with await Wire.connect(running.port) as wire:
            await wire.send_frame(b"route: /echo\nx-pad: " + b"a" * 2000)
            assert status(await wire.receive()) == 431
            assert await wire.closed_by_server()
        async with await Wire.connect(running.port) as wire:
            many = "\n".join(f"h{i}: v" for i in range(100)).encode()
            await wire.send_frame(b"route: /echo\n" + many)
            assert status(await wire.receive()) == 431


async def test_handler_error_gets_500_and_route_error_its_status(
    make_server: ServerFactory,
) -> None:
    app = App()

    @app.request("/boom")
    async def boom(request: RequestContext) -> Any:
        raise RuntimeError("bug in a handler")

    @app.request("/teapot")
    async def teapot(request: RequestContext) -> Any:
        raise RouteError(Status.FORBIDDEN, "no tea for you")

    async with make_server(app=app) as running, await Wire.connect(running.port) as wire:
        reply = await wire.request({"route": "/boom", "id": "b"})
        assert status(reply) == 500
        assert reply.headers["id"] == "b"
        refused = await wire.request({"route": "/teapot"})
        assert status(refused) == 403
        assert refused.headers["message"] == "no tea for you"


async def test_auth_policy_gives_401(make_server: ServerFactory) -> None:
    async def token(credential: str | None) -> str | None:
        if credential != "Bearer good":
            raise RouteError(Status.UNAUTHORIZED, "credential missing or invalid")
        return "alice"

    app = App()

    @app.request("/me", auth=token)
    async def me(request: RequestContext) -> Any:
        return {"principal": request.principal}

    async with make_server(app=app) as running, await Wire.connect(running.port) as wire:
        assert status(await wire.request({"route": "/me"})) == 401
        ok = await wire.request({"route": "/me", "authorization": "Bearer good"})
        assert status(ok) == 0
        assert json.loads(ok.payload) == {"principal": "alice"}


@pytest.mark.parametrize("payload", [b"", b"x" * 70_000])
async def test_bytes_payloads_round_trip(make_server: ServerFactory, payload: bytes) -> None:
    app = App()

    @app.request("/raw")
    async def raw(request: RequestContext) -> Any:
        return request.payload[::-1]

    async with make_server(app=app) as running, await Wire.connect(running.port) as wire:
        reply = await wire.request({"route": "/raw"}, payload)
        assert status(reply) == 0
        assert reply.payload == payload[::-1]
