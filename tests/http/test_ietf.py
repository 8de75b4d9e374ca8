"""The IETF resumable-uploads draft on the same routes, with plain requests: creation with
the whole body, with part of it and with none, offset retrieval, appending, completion,
cancellation, OPTIONS discovery and the problem types; interop versions 6 and 8."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import httpx
import pytest

from xstream_server.server import Server

KiB = 1024
ROUTE = "/upload-file"
PROBLEMS = "https://iana.org/assignments/http-problem-types#"


@pytest.fixture(params=["6", "8"])
def draft(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"Upload-Draft-Interop-Version": str(request.param)}


def partial(draft: dict[str, str], offset: int, complete: bool) -> dict[str, str]:
    return {
        **draft,
        "Upload-Offset": str(offset),
        "Upload-Complete": "?1" if complete else "?0",
        "Content-Type": "application/partial-upload",
    }


async def test_options_and_versions(http: httpx.AsyncClient, draft: dict[str, str]) -> None:
    options = await http.options(ROUTE, headers=draft)
    assert options.status_code == 204
    assert options.headers["upload-limit"].startswith("max-size=")
    old = await http.post(
        ROUTE, headers={"Upload-Draft-Interop-Version": "3", "Upload-Complete": "?1"}
    )
    assert old.status_code == 400
    assert old.headers["content-type"] == "application/problem+json"


async def test_whole_upload_in_one_request(
    http: httpx.AsyncClient, server: Server, draft: dict[str, str]
) -> None:
    data = os.urandom(300 * KiB)
    response = await http.post(ROUTE, headers={**draft, "Upload-Complete": "?1"}, content=data)
    assert response.status_code == 201
    assert response.headers["upload-complete"] == "?1"
    assert response.headers["upload-offset"] == str(len(data))
    assert response.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    key = response.headers["location"].rsplit("/", 1)[1]
    assert server.engine is not None
    assert server.engine.storage.finished_path(key).read_bytes() == data
    head = await http.head(response.headers["location"], headers=draft)
    assert head.status_code == 204
    assert head.headers["upload-complete"] == "?1"
    again = await http.patch(
        response.headers["location"], headers=partial(draft, len(data), True), content=b""
    )
    assert again.status_code == 400
    assert again.json()["type"] == PROBLEMS + "completed-upload"


async def test_create_then_append_resume_and_complete(
    http: httpx.AsyncClient, draft: dict[str, str]
) -> None:
    data = os.urandom(300 * KiB)
    created = await http.post(
        ROUTE,
        headers={**draft, "Upload-Complete": "?0", "Upload-Length": str(len(data))},
        content=data[: 100 * KiB],
    )
    assert created.status_code == 201
    assert created.headers["upload-offset"] == str(100 * KiB)
    assert created.headers["upload-complete"] == "?0"
    location = created.headers["location"]

    head = await http.head(location, headers=draft)
    assert head.status_code == 204
    assert head.headers["upload-offset"] == str(100 * KiB)
    assert head.headers["upload-complete"] == "?0"
    assert head.headers["upload-length"] == str(len(data))
    assert head.headers["cache-control"] == "no-store"

    wrong = await http.patch(location, headers=partial(draft, 0, False), content=b"x")
    assert wrong.status_code == 409
    assert wrong.json()["type"] == PROBLEMS + "mismatching-upload-offset"
    assert wrong.headers["upload-offset"] == str(100 * KiB)

    middle = await http.patch(
        location, headers=partial(draft, 100 * KiB, False), content=data[100 * KiB : 200 * KiB]
    )
    assert middle.status_code == 204
    assert middle.headers["upload-offset"] == str(200 * KiB)
    short = await http.patch(
        location, headers=partial(draft, 200 * KiB, True), content=data[200 * KiB : 250 * KiB]
    )
    assert short.status_code == 400  # "complete" but the upload is longer
    assert short.json()["type"] == PROBLEMS + "inconsistent-upload-length"
    wrong_type = await http.patch(
        location,
        headers={**partial(draft, 200 * KiB, True), "Content-Type": "text/plain"},
        content=data[200 * KiB :],
    )
    assert wrong_type.status_code == 415
    last = await http.patch(
        location, headers=partial(draft, 200 * KiB, True), content=data[200 * KiB :]
    )
    assert last.status_code == 204
    assert last.headers["upload-complete"] == "?1"
    assert last.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"


async def test_creation_without_body_and_cancellation(
    http: httpx.AsyncClient, draft: dict[str, str]
) -> None:
    created = await http.post(
        ROUTE, headers={**draft, "Upload-Complete": "?0", "Upload-Length": "10"}
    )
    assert created.status_code == 201
    assert created.headers["upload-offset"] == "0"
    location = created.headers["location"]
    cancelled = await http.delete(location, headers=draft)
    assert cancelled.status_code == 204
    assert (await http.head(location, headers=draft)).status_code == 410
    no_complete = await http.post(ROUTE, headers={**draft, "Upload-Length": "3"})
    assert no_complete.status_code == 400


async def test_length_said_by_the_request_that_completes(
    http: httpx.AsyncClient, draft: dict[str, str]
) -> None:
    data = os.urandom(200 * KiB)
    created = await http.post(
        ROUTE, headers={**draft, "Upload-Complete": "?0"}, content=data[: 50 * KiB]
    )
    assert created.status_code == 201
    assert created.headers["upload-offset"] == str(50 * KiB)
    location = created.headers["location"]
    head = await http.head(location, headers=draft)
    assert "upload-length" not in head.headers
    assert head.headers["upload-complete"] == "?0"

    async def streamed() -> AsyncIterator[bytes]:
        yield data[50 * KiB :]

    chunked = await http.patch(
        location, headers=partial(draft, 50 * KiB, False), content=streamed()
    )
    assert chunked.status_code == 411
    last = await http.patch(
        location, headers=partial(draft, 50 * KiB, True), content=data[50 * KiB :]
    )
    assert last.status_code == 204
    assert last.headers["upload-complete"] == "?1"
    assert last.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    head = await http.head(location, headers=draft)
    assert head.headers["upload-length"] == str(len(data))
    complete_unknown = await http.post(
        ROUTE, headers={**draft, "Upload-Complete": "?1"}, content=streamed()
    )
    assert complete_unknown.status_code == 400


async def test_an_empty_upload(http: httpx.AsyncClient, draft: dict[str, str]) -> None:
    created = await http.post(ROUTE, headers={**draft, "Upload-Complete": "?1"}, content=b"")
    assert created.status_code == 201
    assert created.headers["upload-complete"] == "?1"
    head = await http.head(created.headers["location"], headers=draft)
    assert head.headers["upload-complete"] == "?1"
