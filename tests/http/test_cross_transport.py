"""One stream, two transports: begun with the packet protocol over TCP and finished with tus
PATCHes on ``/R/<key>``, and the other way round. The key, the offset and the sha256 of
the completion are the same whichever transport carried which bytes."""

from __future__ import annotations

import hashlib
import json
import os

import httpx
import pytest

from xstream_server.server import Server

from ..wire import Wire, status
from .conftest import OCTETS, TUS

KiB = 1024
ROUTE = "/upload-file"


async def test_begun_on_tcp_finished_over_tus(
    server: Server, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(400 * KiB + 3)
    # The default app grants windows of this size: TCP carries the first one only.
    monkeypatch.setenv("XSTREAM_UPLOAD_WINDOW", str(150 * KiB))
    async with await Wire.connect(server.port) as wire:
        accept = await wire.request({"route": ROUTE, "x-stream": f"{len(data)}:65536"})
        assert status(accept) == 0
        assert accept.headers["x-stream"] == f"{150 * KiB}:65536"
        key = accept.headers["x-stream-key"]
        await wire.send_raw(data[: 150 * KiB])
        window_done = await wire.receive()
        assert window_done.headers["x-stream"] == f"{len(data) - 150 * KiB}:0"
    monkeypatch.delenv("XSTREAM_UPLOAD_WINDOW")

    location = f"{ROUTE}/{key}"
    head = await http.head(location, headers=TUS)
    assert head.status_code == 200
    assert head.headers["upload-offset"] == str(150 * KiB)
    assert head.headers["upload-length"] == str(len(data))
    done = await http.patch(
        location, headers={**OCTETS, "Upload-Offset": str(150 * KiB)}, content=data[150 * KiB :]
    )
    assert done.status_code == 204
    assert done.headers["upload-offset"] == str(len(data))
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert done.headers["x-stream-checksum"] == digest
    # A TCP resume of the complete stream repeats the same completion.
    async with await Wire.connect(server.port) as wire:
        again = await wire.request(
            {"route": ROUTE, "x-stream": f"{len(data)}:65536", "x-stream-key": key}
        )
        assert again.headers["x-stream-offset"] == str(len(data))
        completion = await wire.receive()
    assert completion.headers["x-stream-checksum"] == digest
    assert json.loads(completion.payload)["key"] == key


async def test_begun_over_tus_finished_on_tcp(server: Server, http: httpx.AsyncClient) -> None:
    data = os.urandom(400 * KiB + 3)
    created = await http.post(
        ROUTE,
        headers={**OCTETS, "Upload-Length": str(len(data)), "Upload-Metadata": "name eC5iaW4="},
        content=data[: 100 * KiB],
    )
    assert created.status_code == 201
    assert created.headers["upload-offset"] == str(100 * KiB)
    key = created.headers["location"].rsplit("/", 1)[1]
    async with await Wire.connect(server.port) as wire:
        accept = await wire.request(
            {"route": ROUTE, "x-stream": f"{len(data)}:65536", "x-stream-key": key}
        )
        assert status(accept) == 0
        assert accept.headers["x-stream-offset"] == str(100 * KiB)
        await wire.send_raw(data[100 * KiB :])
        done = await wire.receive()
    assert status(done) == 0
    assert done.headers["x-stream-key"] == key
    assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    result = json.loads(done.payload)
    assert (result["key"], result["size"], result["name"]) == (key, len(data), "x.bin")
    head = await http.head(created.headers["location"], headers=TUS)
    assert head.headers["upload-offset"] == str(len(data))
