"""tus 1.0 core, creation, creation-with-upload, expiration and termination, driven with
plain HTTP requests against the default app's ``/upload-file``: every status provoked."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime

import httpx

from xstream_server.server import Server

from .conftest import OCTETS, TUS

KiB = 1024
ROUTE = "/upload-file"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def create(http: httpx.AsyncClient, total: int, **headers: str) -> str:
    response = await http.post(ROUTE, headers={**TUS, "Upload-Length": str(total), **headers})
    assert response.status_code == 201, response.text
    location = response.headers["location"]
    assert location.startswith(ROUTE + "/")
    return location


async def test_options_lists_what_is_implemented_without_tus_resumable(
    http: httpx.AsyncClient,
) -> None:
    response = await http.options(ROUTE)
    assert response.status_code == 204
    assert response.headers["tus-version"] == "1.0.0"
    assert set(response.headers["tus-extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "expiration",
        "termination",
        "checksum",
        "creation-defer-length",
        "concatenation",
        "concatenation-unfinished",
        "checksum-trailer",
    }
    assert int(response.headers["tus-max-size"]) > 0
    assert "tus-resumable" not in response.headers


async def test_create_head_patch_in_pieces_and_complete(
    http: httpx.AsyncClient, server: Server
) -> None:
    data = os.urandom(300 * KiB + 5)
    metadata = f"name {b64('report.pdf')},empty,note {b64('héllo')}"
    location = await create(http, len(data), **{"Upload-Metadata": metadata})
    key = location.rsplit("/", 1)[1]

    head = await http.head(location, headers=TUS)
    assert head.status_code == 200
    assert head.headers["upload-offset"] == "0"  # present even at 0
    assert head.headers["upload-length"] == str(len(data))
    assert head.headers["cache-control"] == "no-store"
    assert head.headers["tus-resumable"] == "1.0.0"
    assert parsedate_to_datetime(head.headers["upload-expires"])
    pairs = [pair.partition(" ") for pair in head.headers["upload-metadata"].split(",")]
    assert {k: base64.b64decode(v).decode() for k, _, v in pairs} == {
        "name": "report.pdf",
        "empty": "",
        "note": "héllo",
    }

    first = await http.patch(
        location, headers={**OCTETS, "Upload-Offset": "0"}, content=data[: 100 * KiB]
    )
    assert first.status_code == 204
    assert first.headers["upload-offset"] == str(100 * KiB)
    assert first.headers["tus-resumable"] == "1.0.0"
    assert parsedate_to_datetime(first.headers["upload-expires"])
    head = await http.head(location, headers=TUS)
    assert head.headers["upload-offset"] == str(100 * KiB)

    wrong = await http.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"x")
    assert wrong.status_code == 409
    assert wrong.headers["content-type"] == "application/problem+json"
    assert "durable offset is 102400" in wrong.json()["detail"]
    assert wrong.headers["tus-resumable"] == "1.0.0"

    async def rest() -> AsyncIterator[bytes]:  # a streamed (chunked) body, as a browser's would be
        for start in range(100 * KiB, len(data), 64 * KiB):
            yield data[start : start + 64 * KiB]

    last = await http.patch(
        location, headers={**OCTETS, "Upload-Offset": str(100 * KiB)}, content=rest()
    )
    assert last.status_code == 204, last.text
    assert last.headers["upload-offset"] == str(len(data))
    assert last.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert "upload-expires" not in last.headers
    head = await http.head(location, headers=TUS)
    assert head.headers["upload-offset"] == str(len(data))
    assert "upload-expires" not in head.headers
    assert server.engine is not None
    assert server.engine.storage.finished_path(key).read_bytes() == data


async def test_creation_with_upload(http: httpx.AsyncClient) -> None:
    data = os.urandom(50 * KiB)
    response = await http.post(
        ROUTE,
        headers={**OCTETS, "Upload-Length": str(2 * len(data))},
        content=data,
    )
    assert response.status_code == 201
    assert response.headers["upload-offset"] == str(len(data))
    assert parsedate_to_datetime(response.headers["upload-expires"])
    head = await http.head(response.headers["location"], headers=TUS)
    assert head.headers["upload-offset"] == str(len(data))


async def test_termination(http: httpx.AsyncClient) -> None:
    location = await create(http, 10)
    await http.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"12345")
    deleted = await http.delete(location, headers=TUS)
    assert deleted.status_code == 204
    assert deleted.headers["tus-resumable"] == "1.0.0"
    for response in (
        await http.head(location, headers=TUS),
        await http.patch(location, headers={**OCTETS, "Upload-Offset": "5"}, content=b"67890"),
        await http.delete(location, headers=TUS),
    ):
        assert response.status_code == 410


async def test_errors(http: httpx.AsyncClient) -> None:
    location = await create(http, 10)
    # 412: a missing or other protocol version, with the versions we speak.
    for headers in ({}, {"Tus-Resumable": "0.2.2"}):
        response = await http.head(location, headers=headers)
        assert response.status_code == 412
        assert response.headers["tus-version"] == "1.0.0"
    # 415: PATCH without the offset content type; a POST body without it.
    response = await http.patch(
        location, headers={**TUS, "Upload-Offset": "0", "Content-Type": "text/plain"}, content=b"x"
    )
    assert response.status_code == 415
    response = await http.post(
        ROUTE, headers={**TUS, "Upload-Length": "3", "Content-Type": "text/plain"}, content=b"abc"
    )
    assert response.status_code == 415
    # 400: malformed or missing headers.
    for headers in (
        {"Upload-Length": "-1"},
        {"Upload-Length": "ten"},
        {},
        {"Upload-Length": "3", "Upload-Metadata": "name not-base64!"},
        {"Upload-Length": "3", "Upload-Metadata": "a,a"},
        {"Upload-Length": "3", "Upload-Metadata": f"a {b64('x')} extra"},
    ):
        response = await http.post(ROUTE, headers={**TUS, **headers})
        assert response.status_code == 400, headers
        assert response.headers["content-type"] == "application/problem+json"
    for offset in (None, "x", "-3"):
        headers = {**OCTETS} if offset is None else {**OCTETS, "Upload-Offset": offset}
        response = await http.patch(location, headers=headers, content=b"x")
        assert response.status_code == 400
    # 413: longer than the route takes; a body past the upload's length.
    response = await http.post(ROUTE, headers={**TUS, "Upload-Length": str(1 << 41)})
    assert response.status_code == 413
    response = await http.patch(
        location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"x" * 11
    )
    assert response.status_code == 413
    # 404: no such upload on this route (malformed key), no such route.
    response = await http.head(ROUTE + "/not*a*key", headers=TUS)
    assert response.status_code == 404
    response = await http.post("/no-such-route", headers={**TUS, "Upload-Length": "3"})
    assert response.status_code == 404
    # 410: a well-formed key nobody knows.
    response = await http.head(ROUTE + "/AAAAAAAAAAAAAAAAAAAAAAAA", headers=TUS)
    assert response.status_code == 410
    assert response.headers["tus-resumable"] == "1.0.0"
    # 405: a method the resource does not take.
    response = await http.put(location, headers=TUS)
    assert response.status_code == 405


async def test_creation_defer_length(http: httpx.AsyncClient) -> None:
    data = os.urandom(200 * KiB)
    created = await http.post(ROUTE, headers={**TUS, "Upload-Defer-Length": "1"})
    assert created.status_code == 201
    location = created.headers["location"]
    head = await http.head(location, headers=TUS)
    assert head.headers["upload-defer-length"] == "1"
    assert "upload-length" not in head.headers
    assert head.headers["upload-offset"] == "0"

    async def streamed() -> AsyncIterator[bytes]:
        yield data[:10]

    unknown = await http.patch(
        location, headers={**OCTETS, "Upload-Offset": "0"}, content=streamed()
    )
    assert unknown.status_code == 411  # no Content-Length while the length is unknown
    first = await http.patch(
        location, headers={**OCTETS, "Upload-Offset": "0"}, content=data[: 120 * KiB]
    )
    assert first.status_code == 204
    assert first.headers["upload-offset"] == str(120 * KiB)
    below = await http.patch(
        location,
        headers={**OCTETS, "Upload-Offset": str(120 * KiB), "Upload-Length": "5"},
        content=b"",
    )
    assert below.status_code == 409
    last = await http.patch(
        location,
        headers={**OCTETS, "Upload-Offset": str(120 * KiB), "Upload-Length": str(len(data))},
        content=data[120 * KiB :],
    )
    assert last.status_code == 204
    assert last.headers["upload-offset"] == str(len(data))
    assert last.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    head = await http.head(location, headers=TUS)
    assert head.headers["upload-length"] == str(len(data))
    for headers in (
        {"Upload-Defer-Length": "2"},
        {"Upload-Defer-Length": "1", "Upload-Length": "3"},
    ):
        assert (await http.post(ROUTE, headers={**TUS, **headers})).status_code == 400


async def test_an_empty_upload_is_complete_at_creation(http: httpx.AsyncClient) -> None:
    created = await http.post(ROUTE, headers={**TUS, "Upload-Length": "0"})
    assert created.status_code == 201
    assert created.headers["upload-offset"] == "0"
    assert created.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(b'').hexdigest()}"
    key = created.headers["location"].rsplit("/", 1)[1]
    status = await http.post("/stream-status", json={"key": key})
    assert status.json()["state"] == "complete"
    assert (await http.get(created.headers["location"])).content == b""
