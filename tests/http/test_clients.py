"""Real tus clients that nobody here wrote upload into the default app's ``/upload-file``:
tuspy (Python) and tus-js-client (Node, speaking tus 1.0 and the IETF draft's interop
version 6), straight and through a proxy that cuts their connections several times
mid-upload. The stored bytes and the sha256 of the completion
must be the file's."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import BinaryIO

import pytest
from tusclient.client import TusClient

from xstream_server.server import Server

from .proxy import CuttingProxy

MiB = 1024 * 1024
JS = Path(__file__).resolve().parent.parent / "js"


async def _check_stored(server: Server, url: str, data: bytes) -> None:
    key = url.rstrip("/").rsplit("/", 1)[1]
    engine = server.engine
    assert engine is not None
    record = await engine.store.get(key)
    assert record is not None and record.result is not None
    digest = hashlib.sha256(data).hexdigest()
    assert record.result.headers["x-stream-checksum"] == f"sha256:{digest}"
    assert engine.storage.finished_path(key).read_bytes() == data


def _tuspy_upload(endpoint: str, path: Path, chunk_size: int | None) -> str:
    client = TusClient(endpoint)
    # An open file of our own: given a path, tuspy opens it once per request and never
    # closes it.
    with path.open("rb") as stream:
        return _tuspy_upload_stream(client, stream, path.name, chunk_size)


def _tuspy_upload_stream(
    client: TusClient, stream: BinaryIO, name: str, chunk_size: int | None
) -> str:
    uploader = client.uploader(
        file_stream=stream,
        metadata={"name": name},
        retries=20,
        retry_delay=0,
        **({"chunk_size": chunk_size} if chunk_size else {}),
    )
    uploader.upload()
    assert uploader.url is not None
    return str(uploader.url)


@pytest.mark.parametrize("chunk_size", [None, 512 * 1024], ids=["one-patch", "chunks"])
@pytest.mark.parametrize("cuts", [0, 4], ids=["direct", "cut"])
async def test_tuspy(server: Server, tmp_path: Path, chunk_size: int | None, cuts: int) -> None:
    data = os.urandom(3 * MiB + 17)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    async with CuttingProxy(server.http_port or 0, cut_after=300 * 1024, cuts=cuts) as proxy:
        endpoint = f"http://127.0.0.1:{proxy.port}/upload-file"
        url = await asyncio.to_thread(_tuspy_upload, endpoint, path, chunk_size)
        assert proxy.cuts_left == 0
    await _check_stored(server, url, data)


# scripts/setup --dev installs tus-js-client when npm is there (CI: always).
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="Node is not installed")


@needs_node
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"chunkSize": 512 * 1024, "uploadDataDuringCreation": True},
        {"chunkSize": 512 * 1024, "uploadLengthDeferred": True},
        {"protocol": "ietf-draft-05"},
        {"protocol": "ietf-draft-05", "chunkSize": 512 * 1024, "uploadDataDuringCreation": True},
        # Partial uploads in parallel, then a final one made of them (concatenation).
        {"parallelUploads": 3},
    ],
    ids=[
        "one-patch",
        "chunks-with-creation",
        "deferred-length",
        "ietf-6",
        "ietf-6-chunks-with-creation",
        "parallel-3",
    ],
)
@pytest.mark.parametrize("cuts", [0, 4], ids=["direct", "cut"])
async def test_tus_js_client(
    server: Server, tmp_path: Path, options: dict[str, object], cuts: int
) -> None:
    data = os.urandom(3 * MiB + 17)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    async with CuttingProxy(server.http_port or 0, cut_after=300 * 1024, cuts=cuts) as proxy:
        endpoint = f"http://127.0.0.1:{proxy.port}/upload-file"
        node = await asyncio.create_subprocess_exec(
            "node",
            str(JS / "upload.mjs"),
            endpoint,
            str(path),
            json.dumps(options),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=JS,
        )
        out, err = await asyncio.wait_for(node.communicate(), 120)
        assert node.returncode == 0, err.decode()
        assert proxy.cuts_left == 0
    await _check_stored(server, json.loads(out)["url"], data)


async def test_tuspy_when_windows_are_smaller_than_its_patches(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default app grants windows of ``XSTREAM_UPLOAD_WINDOW`` bytes: a PATCH of the
    whole file is answered after the first MiB with that offset, the connection closed,
    and the client goes on from there."""
    monkeypatch.setenv("XSTREAM_UPLOAD_WINDOW", str(MiB))
    data = os.urandom(3 * MiB + 17)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    url = await asyncio.to_thread(
        _tuspy_upload, f"http://127.0.0.1:{server.http_port}/upload-file", path, None
    )
    await _check_stored(server, url, data)
