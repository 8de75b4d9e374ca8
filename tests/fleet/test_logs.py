"""``--log-format json``: one JSON object per line; a stream's lines carry its key, route,
transport, client address and status where they apply, and neither payload bytes nor
credentials (bearer tokens, JWTs, ``token=`` parameters, Redis passwords)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from typing import Any

import httpx
from websockets.asyncio.client import connect as ws_connect

from tests.conftest import ServerFactory, ServerProcess, SpawnServer
from tests.durability.support import Link, status
from xstream_server.app import App, CompletedUpload, StreamOffer
from xstream_server.identity import issue_token
from xstream_server.logs import JsonFormatter, bind_log_fields, scrub
from xstream_server.protocol import PacketDecoder, encode_packet

ROUTE = "/upload-file"
MARK = b"PAYLOAD-MARK-" * 100


def http_port(server: ServerProcess) -> int:
    for line in server.log:
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError("no HTTP port in the start-up line")


async def upload_over_tcp(port: int, token: str) -> str:
    async with await Link.connect(port) as link:
        accept = await link.request(
            {"route": ROUTE, "x-stream": f"{len(MARK)}:65536", "authorization": f"Bearer {token}"}
        )
        await link.send_raw(MARK)
        assert status(await link.receive()) == 0
        return accept.headers["x-stream-key"]


async def upload_over_http(port: int, token: str) -> str:
    headers = {"tus-resumable": "1.0.0", "authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        created = await http.post(ROUTE, headers={"upload-length": str(len(MARK))})
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        patched = await http.patch(
            location,
            content=MARK,
            headers={"upload-offset": "0", "content-type": "application/offset+octet-stream"},
        )
        assert patched.status_code == 204, patched.text
        return location.rstrip("/").rsplit("/", 1)[-1]


async def upload_over_websocket(port: int, token: str) -> str:
    decoder = PacketDecoder(payload_limit=lambda _: 1 << 20)
    async with ws_connect(f"ws://127.0.0.1:{port}/x-stream", open_timeout=10) as ws:

        async def receive() -> dict[str, str]:
            while (packet := decoder.next_packet()) is None:
                message = await ws.recv()
                assert isinstance(message, bytes)
                decoder.receive_data(message)
            return dict(packet.headers)

        stream = {"route": ROUTE, "x-stream": f"{len(MARK)}:65536"}
        await ws.send(encode_packet({**stream, "authorization": f"Bearer {token}"}))
        accept = await receive()
        assert accept["status"] == "0", accept
        await ws.send(MARK)
        assert (await receive())["status"] == "0"
        return accept["x-stream-key"]


async def refused_with_a_forged_token(port: int, token: str) -> None:
    async with await Link.connect(port) as link:
        reply = await link.request(
            {"route": ROUTE, "x-stream": "10:10", "authorization": f"Bearer {token}"}
        )
        assert status(reply) == 401


async def test_json_lines_name_stream_route_transport_client_and_no_secret(
    spawn_server: SpawnServer,
) -> None:
    # The embedded Redis: its URL holds a password, which must not show.
    # The default app checks bearer tokens: real ones, which must not show either.
    secret = "log-test-secret-" * 3
    tokens = {name: issue_token(secret, "@logger") for name in ("tcp", "http", "websocket")}
    forged = issue_token("another-secret-" * 3, "@logger")
    server = spawn_server(
        "--log-format",
        "json",
        "--log-level",
        "DEBUG",
        redis=None,
        env={"XSTREAM_AUTH_SECRET": secret, "XSTREAM_IDLE_TIMEOUT": "1"},
    )
    web = http_port(server)
    async with asyncio.timeout(30):
        keys = {
            "tcp": await upload_over_tcp(server.port, tokens["tcp"]),
            "http": await upload_over_http(web, tokens["http"]),
            "websocket": await upload_over_websocket(web, tokens["websocket"]),
        }
        await refused_with_a_forged_token(server.port, forged)
        idle = await Link.connect(server.port)  # closed by the server's idle timer
        await idle.wait_closed(10)
    assert server.terminate() == 0
    lines: list[dict[str, Any]] = [json.loads(line) for line in server.log]  # each is JSON
    assert all({"time", "level", "logger", "message", "pid"} <= set(line) for line in lines)
    for transport, key in keys.items():
        mine = [line for line in lines if line.get("key") == key]
        done = [line for line in mine if "complete" in line["message"]]
        assert len(done) == 1, mine
        assert done[0]["status"] == 0
        assert done[0]["route"] == ROUTE
        assert done[0]["transport"] == transport
        assert done[0]["client"] == "127.0.0.1"
        assert done[0]["principal"] == "@logger"
        # Every line of the stream, the engine's debug lines too, says how it came.
        assert all(line["route"] == ROUTE for line in mine), mine
        assert all(line["transport"] == transport for line in mine), mine
        assert all(line["client"] == "127.0.0.1" for line in mine), mine
    # A connection's own lines, logged from its timer, say where it came from too.
    idled = [line for line in lines if "idle for" in line["message"]]
    assert idled and idled[0]["transport"] == "tcp" and idled[0]["client"] == "127.0.0.1"
    text = "\n".join(server.log)
    assert "PAYLOAD-MARK" not in text
    assert secret not in text
    for token in [*tokens.values(), forged]:
        assert token not in text
        assert token.split(".")[2] not in text  # not even the signature alone
    assert any("unix://:***@" in line["message"] for line in lines)


def test_scrub_masks_url_passwords_and_tokens() -> None:
    assert scrub("redis://:hunter2@host:6379/0") == "redis://:***@host:6379/0"
    assert scrub("rediss://user:pw@h") == "rediss://user:***@h"
    assert scrub("authorization: Bearer abc.def") == "authorization: Bearer ***"
    assert scrub("Authorization: Basic dXNlcjpwdw==") == "Authorization: Basic ***"
    assert scrub("GET /files/k?token=abc.def&x=1") == "GET /files/k?token=***&x=1"
    assert scrub("GET /files/k?a=1&access_token=s3cr3t") == "GET /files/k?a=1&access_token=***"
    jwt = issue_token("scrub-test-secret-" * 2, "@someone")
    assert scrub(f"refused {jwt} here") == "refused *** here"


def test_bound_fields_reach_the_json_line_and_extra_wins() -> None:
    def line(**extra: object) -> dict[str, Any]:
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "stream %s: x", ("k1",), None)
        record.__dict__.update(extra)
        result: dict[str, Any] = json.loads(JsonFormatter().format(record))
        return result

    assert "transport" not in line()
    with bind_log_fields(transport="utp", client="10.0.0.1"):
        with bind_log_fields(route="/r"):
            inner = line(status=408)
        outer = line(client="10.0.0.2")
    assert inner["transport"] == "utp" and inner["client"] == "10.0.0.1"
    assert (inner["route"], inner["status"], inner["key"]) == ("/r", 408, "k1")
    assert "route" not in outer and outer["client"] == "10.0.0.2"  # the call's extra wins
    assert "transport" not in line()


async def test_a_stream_request_whose_hook_fails_is_logged_with_route_and_status(
    make_server: ServerFactory,
) -> None:
    app = App()

    async def broken(offer: StreamOffer) -> int | None:
        raise RuntimeError("the accept hook broke")

    @app.stream("/broken", accept=broken)
    async def never(upload: CompletedUpload) -> None:
        raise AssertionError("no stream was accepted")

    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(JsonFormatter())
    engine_log = logging.getLogger("xstream.engine")
    engine_log.addHandler(handler)
    try:
        async with make_server(app) as server, await Link.connect(server.port) as link:
            reply = await link.request({"route": "/broken", "x-stream": "10:10"})
            assert status(reply) == 500
    finally:
        engine_log.removeHandler(handler)
    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    failed = [line for line in lines if line["message"] == "stream request on /broken failed"]
    assert len(failed) == 1, lines
    assert failed[0]["route"] == "/broken" and failed[0]["status"] == 500
    assert (failed[0]["transport"], failed[0]["client"]) == ("tcp", "127.0.0.1")
    assert "the accept hook broke" in failed[0]["error"]  # the traceback
