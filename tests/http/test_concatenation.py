"""tus concatenation: partial uploads (no handler runs for them), a final upload made of
them by URL or path (the handler runs once, on the whole), 403 on PATCH to a final, and
what cannot be concatenated (400)."""

from __future__ import annotations

import hashlib
import os

import httpx

from xstream_server.server import Server

from .conftest import OCTETS, TUS, base_url

KiB = 1024
ROUTE = "/upload-file"


async def partial_upload(http: httpx.AsyncClient, data: bytes, *, finish: bool = True) -> str:
    created = await http.post(
        ROUTE,
        headers={**OCTETS, "Upload-Length": str(len(data)), "Upload-Concat": "partial"},
        content=data if finish else data[:1],
    )
    assert created.status_code == 201
    return str(created.headers["location"])


async def test_final_upload_made_of_partial_ones(http: httpx.AsyncClient, server: Server) -> None:
    options = await http.options(ROUTE)
    assert "concatenation" in options.headers["tus-extension"].split(",")
    pieces = [os.urandom(100 * KiB), os.urandom(7), os.urandom(50 * KiB)]
    locations = [await partial_upload(http, piece) for piece in pieces]
    head = await http.head(locations[0], headers=TUS)
    assert head.headers["upload-concat"] == "partial"
    assert head.headers["upload-offset"] == str(100 * KiB)

    # One by absolute URL, the others by path, as clients may give them.
    parts = [base_url(server) + locations[0], *locations[1:]]
    final = await http.post(ROUTE, headers={**TUS, "Upload-Concat": "final;" + " ".join(parts)})
    assert final.status_code == 201
    data = b"".join(pieces)
    assert final.headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    location = final.headers["location"]
    head = await http.head(location, headers=TUS)
    assert head.headers["upload-concat"] == "final;" + " ".join(locations)
    assert head.headers["upload-offset"] == head.headers["upload-length"] == str(len(data))
    assert (await http.get(location)).content == data

    refused = await http.patch(
        location, headers={**OCTETS, "Upload-Offset": str(len(data))}, content=b""
    )
    assert refused.status_code == 403


async def test_what_cannot_be_concatenated(http: httpx.AsyncClient) -> None:
    done = await partial_upload(http, b"abc")
    unfinished = await partial_upload(http, b"abcdef", finish=False)
    plain = await http.post(ROUTE, headers={**OCTETS, "Upload-Length": "1"}, content=b"x")
    for parts, headers in (
        (f"{done} {unfinished}", {}),  # concatenation-unfinished is not offered
        (f"{done} {plain.headers['location']}", {}),  # not a partial upload
        (f"{done} /elsewhere/AAAAAAAAAAAAAAAAAAAAAAAA", {}),  # not this route's
        (done, {"Upload-Length": "3"}),  # a final upload's length is its parts'
    ):
        response = await http.post(
            ROUTE, headers={**TUS, **headers, "Upload-Concat": f"final;{parts}"}
        )
        assert response.status_code == 400, parts
    gone = await http.post(
        ROUTE, headers={**TUS, "Upload-Concat": f"final;{ROUTE}/AAAAAAAAAAAAAAAAAAAAAAAA"}
    )
    assert gone.status_code == 410
    odd = await http.post(ROUTE, headers={**TUS, "Upload-Length": "1", "Upload-Concat": "whole"})
    assert odd.status_code == 400
