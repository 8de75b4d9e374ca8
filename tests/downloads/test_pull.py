"""Downloads over the packet protocol (PROTOCOL §5), end to end over TCP with real Redis and
files: the accept reply, exactly ``T − O`` raw bytes then packets again, resuming from an
offset, every refusal (404, 403, 405, 410, 416), a pull whose content vanishes, and a live
relay of an upload in progress that only ever sends durable bytes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.server.test_websocket import ws_wire
from tests.wire import Wire, status
from xstream_server import App, CompletedUpload, PullContext, RouteError, Status, StreamContent
from xstream_server.identity import issue_token, server_secret
from xstream_server.protocol import Packet
from xstream_server.server import Server

MiB = 1024 * 1024


async def upload(wire: Wire, data: bytes, route: str = "/upload-file", **headers: str) -> str:
    accept = await wire.request({"route": route, "x-stream": f"{len(data)}:65536", **headers})
    assert status(accept) == 0, accept.headers
    await wire.send_raw(data)
    done = await wire.receive()
    assert status(done) == 0, done.headers
    return accept.headers["x-stream-key"]


def pull_headers(key: str | None, offset: int = 0, route: str = "/upload-file") -> dict[str, str]:
    headers = {"route": route, "id": "get", "x-stream-pull": f"{offset}:65536"}
    if key is not None:
        headers["x-stream-key"] = key
    return headers


async def pull(wire: Wire, key: str | None, offset: int = 0, **extra: str) -> Packet:
    return await wire.request({**pull_headers(key, offset), **extra})


async def test_pull_of_a_completed_upload(server: Server) -> None:
    data = os.urandom(3 * MiB + 5)
    async with await Wire.connect(server.port) as wire:
        key = await upload(wire, data)
        reply = await pull(wire, key)
        assert reply.headers == {
            "status": "0",
            "id": "get",
            "x-stream": f"{len(data)}:65536",
            "x-stream-key": key,
            "x-stream-offset": "0",
            "x-stream-checksum": f"sha256:{hashlib.sha256(data).hexdigest()}",
        }
        assert await wire.receive_raw(len(data)) == data
        # Packet mode again: a request is answered on the same connection.
        echoed = await wire.request({"route": "/echo", "data-format": "json"}, b"[1]")
        assert (status(echoed), echoed.payload) == (0, b"[1]")


async def test_pull_resumes_from_the_bytes_held(server: Server) -> None:
    data = os.urandom(MiB + 77)
    async with await Wire.connect(server.port) as wire:
        key = await upload(wire, data)
        reply = await pull(wire, key, offset=1000)
        assert reply.headers["x-stream-offset"] == "1000"
        assert reply.headers["x-stream"].startswith(f"{len(data)}:")
        assert await wire.receive_raw(len(data) - 1000) == data[1000:]
        # O = T is legal: the reply, and no byte follows.
        everything = await pull(wire, key, offset=len(data))
        assert status(everything) == 0
        assert everything.headers["x-stream-offset"] == str(len(data))
        assert status(await wire.request({"route": "/echo", "data-format": "json"}, b"2")) == 0


async def test_requests_pipelined_behind_a_pull_are_answered_after_it(server: Server) -> None:
    data = os.urandom(2 * MiB)
    async with await Wire.connect(server.port) as wire:
        key = await upload(wire, data)
        await wire.send(pull_headers(key))
        await wire.send({"route": "/echo", "data-format": "json", "id": "after"}, b'"x"')
        reply = await wire.receive()
        assert status(reply) == 0
        assert await wire.receive_raw(len(data)) == data
        after = await wire.receive()
        assert (after.headers["id"], after.payload) == ("after", b'"x"')


async def test_refusals(make_server: ServerFactory) -> None:
    """Each refusal status of a pull, provoked; every one carries ``x-stream: -1`` and the
    connection stays in packet mode."""
    async with make_server() as server, await Wire.connect(server.port) as wire:
        alice = f"Bearer {issue_token(server_secret(server.settings), '@alice')}"
        bob = f"Bearer {issue_token(server_secret(server.settings), '@bob')}"
        key = await upload(wire, b"0123456789", authorization=alice)
        accept = await wire.request({"route": "/upload-file", "x-stream": "10:65536"})
        incomplete = accept.headers["x-stream-key"]
        await wire.send_raw(b"01234")
        await wire.close()
    async with make_server() as server, await Wire.connect(server.port) as wire:
        cases: list[tuple[dict[str, str], int, str]] = [
            (pull_headers(None), 404, "x-stream-key"),
            (pull_headers(incomplete), 404, "incomplete"),
            (pull_headers(key, route="/nowhere"), 404, "no route"),
            (pull_headers(key, route="/echo"), 405, "nothing to pull"),
            (pull_headers("AAAAAAAAAAAAAAAAAAAAAAAA"), 410, "unknown"),
            ({**pull_headers(key), "authorization": bob}, 403, "someone else"),
            (pull_headers(key), 403, "someone else"),
            ({**pull_headers(key), "authorization": "Bearer junk"}, 401, "invalid token"),
            ({**pull_headers(key, offset=11), "authorization": alice}, 416, "past the end"),
            ({**pull_headers(key), "x-stream-pull": "0:0"}, 400, "O:B"),
        ]
        for headers, expected, message in cases:
            reply = await wire.request(headers)
            assert status(reply) == expected, (headers, reply.headers)
            assert reply.headers["x-stream"] == "-1"
            assert message in reply.headers["message"], reply.headers
        owned = await wire.request({**pull_headers(key, offset=4), "authorization": alice})
        assert status(owned) == 0
        assert await wire.receive_raw(6) == b"456789"


async def test_content_gone_from_storage_is_410(make_server: ServerFactory) -> None:
    """A completion handler that moved its file away: the record stays, the bytes do not."""
    app = App()

    @app.stream("/move", content=lambda pull: _content(pull))
    async def move(upload: CompletedUpload) -> None:
        upload.path.unlink()

    async with make_server(app=app) as server, await Wire.connect(server.port) as wire:
        key = await upload(wire, b"gone soon", route="/move")
        reply = await wire.request(pull_headers(key, route="/move"))
        assert (status(reply), reply.headers["x-stream"]) == (410, "-1")
        assert "no longer stored" in reply.headers["message"]


async def _content(pull: PullContext) -> StreamContent:
    assert pull.key is not None
    return StreamContent(pull.key)


async def test_failing_content_hook_is_500_and_the_server_goes_on(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.pull("/broken")
    async def broken(pull: PullContext) -> StreamContent:
        raise KeyError("bug")

    @app.pull("/refusing")
    async def refusing(pull: PullContext) -> StreamContent:
        raise RouteError(Status.FORBIDDEN, "not for you")

    async with make_server(app=app) as server, await Wire.connect(server.port) as wire:
        reply = await wire.request(pull_headers("k", route="/broken"))
        assert (status(reply), reply.headers["x-stream"]) == (500, "-1")
        assert "content hook of /broken failed" in caplog.text
        reply = await wire.request(pull_headers("k", route="/refusing"))
        assert (status(reply), reply.headers["message"]) == (403, "not for you")
        # A pull route takes no requests or streams.
        assert status(await wire.request({"route": "/refusing"})) == 405
        refused = await wire.request({"route": "/refusing", "x-stream": "1:1"})
        assert status(refused) == 405


async def test_download_cut_when_its_stream_is_deleted(make_server: ServerFactory) -> None:
    """Content that vanishes while it is sent ends the connection (no packet can be said
    in the middle of raw bytes); the server goes on serving others."""
    data = os.urandom(8 * MiB)
    async with make_server() as server, await Wire.connect(server.port) as wire:
        key = await upload(wire, data)
        path = server.settings.data_dir / "streams"
        reply = await pull(wire, key)
        assert status(reply) == 0
        for stored in path.rglob(key + "*"):
            stored.unlink()
        with pytest.raises(EOFError, match="server closed after"):
            await wire.receive_raw(len(data))
        async with await Wire.connect(server.port) as other:
            assert status(await other.request({"route": "/echo", "data-format": "json"}, b"1")) == 0


# ---- live relay ------------------------------------------------------------------------------


def relay_app() -> App:
    app = App()

    @app.stream("/up", max_buffer=64 * 1024)
    async def up(upload: CompletedUpload) -> dict[str, Any]:
        return {"sha256": upload.sha256}

    @app.pull("/relay")
    async def relay(pull: PullContext) -> StreamContent:
        if pull.key is None:
            raise RouteError(Status.NOT_FOUND, "which stream?")
        return StreamContent(pull.key, live=True, route="/up")

    return app


async def durable_offset(port: int, key: str) -> int:
    async with await Wire.connect(port) as wire:
        reply = await wire.request({"route": "/stream-status"}, json.dumps({"key": key}).encode())
        info: Mapping[str, Any] = json.loads(reply.payload)
        return int(info["offset"])


async def test_live_relay_sends_only_durable_bytes(make_server: ServerFactory) -> None:
    """A pull of a stream still being uploaded: bytes reach the receiver once they are
    checkpointed, never before; it waits for more, and ends at the total with the same
    sha256 as the upload."""
    data = os.urandom(4 * MiB)
    # Checkpoints every MiB written, never by time: what is durable is known exactly.
    settings: dict[str, Any] = {"checkpoint_bytes": MiB, "checkpoint_seconds": 3600.0}
    async with (
        make_server(app=relay_app(), **settings) as server,
        await Wire.connect(server.port) as uploader,
        await Wire.connect(server.port) as receiver,
    ):
        accept = await uploader.request({"route": "/up", "x-stream": f"{len(data)}:65536"})
        key = accept.headers["x-stream-key"]
        # Nothing durable yet: the pull is accepted, and no byte comes.
        reply = await receiver.request(
            {"route": "/relay", "x-stream-pull": "0:65536", "x-stream-key": key}
        )
        assert status(reply) == 0
        assert reply.headers["x-stream"].startswith(f"{len(data)}:")
        assert "x-stream-checksum" not in reply.headers  # unknown until complete
        # Past one checkpoint's worth: some bytes become durable and are relayed.
        await uploader.send_raw(data[: MiB + 300 * 1024])
        first = await receiver.receive_raw(MiB)
        assert first == data[:MiB]
        durable = await durable_offset(server.port, key)
        assert MiB <= durable < MiB + 300 * 1024 + 1
        rest_of_durable = await receiver.receive_raw(durable - MiB)
        assert rest_of_durable == data[MiB:durable]
        # Bytes written but not checkpointed are not sent.
        with pytest.raises(TimeoutError):
            await receiver.receive_raw(1, timeout=0.5)
        # The uploader goes away: its written bytes are made durable, then relayed.
        await uploader.close()
        settled = MiB + 300 * 1024
        assert await receiver.receive_raw(settled - durable) == data[durable:settled]
        async with await Wire.connect(server.port) as resumer:
            again = await resumer.request(
                {"route": "/up", "x-stream": f"{len(data)}:65536", "x-stream-key": key}
            )
            assert again.headers["x-stream-offset"] == str(settled)
            await resumer.send_raw(data[settled:])
            done = await resumer.receive()
            assert status(done) == 0
        rest = await receiver.receive_raw(len(data) - settled)
        received = data[:settled] + rest
        assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()
        # The receiver's connection is in packet mode again.
        assert status(await receiver.request({"route": "/stream-status"}, b"{}")) == 400


async def test_live_relay_waits_on_an_empty_stream_until_cancelled_by_shutdown(
    make_server: ServerFactory,
) -> None:
    """A relay waiting for bytes that do not come ends with the server (no hang)."""
    async with make_server(app=relay_app()) as server:
        uploader = await Wire.connect(server.port)
        receiver = await Wire.connect(server.port)
        accept = await uploader.request({"route": "/up", "x-stream": "100:65536"})
        key = accept.headers["x-stream-key"]
        reply = await receiver.request(
            {"route": "/relay", "x-stream-pull": "0:65536", "x-stream-key": key}
        )
        assert status(reply) == 0
        closing = asyncio.get_running_loop().create_task(server.close())
        assert await receiver.closed_by_server()
        await closing
        await uploader.close()
        await receiver.close()


async def test_pull_over_websocket_resumes_a_tcp_one(server: Server) -> None:
    """The same driver serves WebSocket: a pull cut on TCP resumes over WebSocket."""
    data = os.urandom(3 * MiB + 3)
    async with await Wire.connect(server.port) as wire:
        key = await upload(wire, data)
        assert status(await pull(wire, key)) == 0
        head = await wire.receive_raw(MiB)
    async with ws_wire(server, message_size=1000) as ws:
        await ws.send({**pull_headers(key, offset=len(head))})
        reply = await ws.receive()
        assert status(reply) == 0
        assert reply.headers["x-stream-offset"] == str(MiB)
        tail = bytearray(ws.decoder.take_buffered())
        while len(tail) < len(data) - MiB:
            message = await ws.ws.recv()
            assert isinstance(message, bytes)
            tail += message
        assert head + tail == data
        echoed = await ws.request({"route": "/echo", "data-format": "json"}, b"3")
        assert echoed.payload == b"3"


async def test_http_get_follows_the_same_principal_rule(server: Server) -> None:
    """``GET /upload-file/K`` reads through the same engine API: a token's upload only
    for its principal; an anonymous one for anyone with the key."""
    import httpx

    secret = server_secret(server.settings)
    alice = f"Bearer {issue_token(secret, '@alice')}"
    bob = f"Bearer {issue_token(secret, '@bob')}"
    async with await Wire.connect(server.port) as wire:
        owned = await upload(wire, b"alice's bytes", authorization=alice)
        anonymous = await upload(wire, b"anyone's bytes")
    base = f"http://127.0.0.1:{server.http_port}/upload-file"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/{owned}")).status_code == 403
        assert (
            await http.get(f"{base}/{owned}", headers={"Authorization": bob})
        ).status_code == 403
        mine = await http.get(f"{base}/{owned}", headers={"Authorization": alice})
        assert (mine.status_code, mine.content) == (200, b"alice's bytes")
        ranged = await http.get(
            f"{base}/{owned}", headers={"Authorization": alice, "Range": "bytes=8-"}
        )
        assert (ranged.status_code, ranged.content) == (206, b"bytes")
        shared = await http.get(f"{base}/{anonymous}", headers={"Authorization": bob})
        assert (shared.status_code, shared.content) == (200, b"anyone's bytes")
