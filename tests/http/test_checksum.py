"""tus checksum: ``Upload-Checksum`` with sha1 (which tus makes mandatory) and sha256. A
mismatch is 460, the part discarded and the offset unchanged; an unknown algorithm or a
malformed digest is 400; tuspy's own checksums are accepted."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from pathlib import Path

import httpx
import pytest
from tusclient.client import TusClient

from xstream_server.server import Server

from .conftest import OCTETS, TUS

KiB = 1024
ROUTE = "/upload-file"


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


async def test_options_announce_algorithms(http: httpx.AsyncClient) -> None:
    response = await http.options(ROUTE)
    assert "checksum" in response.headers["tus-extension"].split(",")
    assert response.headers["tus-checksum-algorithm"] == "sha1,sha256"


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
async def test_mismatch_is_460_and_the_offset_stays(
    http: httpx.AsyncClient, server: Server, algorithm: str
) -> None:
    data = os.urandom(200 * KiB)
    created = await http.post(ROUTE, headers={**TUS, "Upload-Length": str(len(data))})
    location = created.headers["location"]
    first, rest = data[: 120 * KiB], data[120 * KiB :]
    ok = await http.patch(
        location,
        headers={**OCTETS, "Upload-Offset": "0", "Upload-Checksum": checksum(algorithm, first)},
        content=first,
    )
    assert ok.status_code == 204
    assert ok.headers["upload-offset"] == str(len(first))

    corrupted = b"\xff" + rest[1:]
    bad = await http.patch(
        location,
        headers={
            **OCTETS,
            "Upload-Offset": str(len(first)),
            "Upload-Checksum": checksum(algorithm, rest),
        },
        content=corrupted,
    )
    assert bad.status_code == 460
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.headers["upload-offset"] == str(len(first))
    assert bad.headers["tus-resumable"] == "1.0.0"
    head = await http.head(location, headers=TUS)
    assert head.headers["upload-offset"] == str(len(first))

    done = await http.patch(
        location,
        headers={
            **OCTETS,
            "Upload-Offset": str(len(first)),
            "Upload-Checksum": checksum(algorithm, rest),
        },
        content=rest,
    )
    assert done.status_code == 204
    assert done.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    key = location.rsplit("/", 1)[1]
    assert server.engine is not None
    assert server.engine.storage.finished_path(key).read_bytes() == data


async def test_creation_with_upload_checked(http: httpx.AsyncClient) -> None:
    data = os.urandom(10 * KiB)
    headers = {**OCTETS, "Upload-Length": str(2 * len(data))}
    bad = await http.post(
        ROUTE, headers={**headers, "Upload-Checksum": checksum("sha1", b"other")}, content=data
    )
    assert bad.status_code == 460  # the upload exists, its first part was refused
    assert bad.headers["upload-offset"] == "0"
    good = await http.post(
        ROUTE, headers={**headers, "Upload-Checksum": checksum("sha1", data)}, content=data
    )
    assert good.status_code == 201
    assert good.headers["upload-offset"] == str(len(data))


async def test_malformed_checksums_are_400(http: httpx.AsyncClient) -> None:
    created = await http.post(ROUTE, headers={**TUS, "Upload-Length": "10"})
    location = created.headers["location"]
    for value in ("md4 AAAA", "sha1 not-base64!", "sha1 " + base64.b64encode(b"short").decode()):
        response = await http.patch(
            location,
            headers={**OCTETS, "Upload-Offset": "0", "Upload-Checksum": value},
            content=b"0123456789",
        )
        assert response.status_code == 400, value
    head = await http.head(location, headers=TUS)
    assert head.headers["upload-offset"] == "0"


async def test_tuspy_with_checksums(server: Server, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * KiB + 5)

    def upload() -> str:
        client = TusClient(f"http://127.0.0.1:{server.http_port}{ROUTE}")
        with (tmp_path / "f").open("wb+") as stream:
            stream.write(data)
            uploader = client.uploader(
                file_stream=stream, chunk_size=512 * KiB, upload_checksum=True
            )
            uploader.upload()
            return str(uploader.url)

    url = await asyncio.to_thread(upload)
    assert server.engine is not None
    key = url.rsplit("/", 1)[1]
    assert server.engine.storage.finished_path(key).read_bytes() == data
