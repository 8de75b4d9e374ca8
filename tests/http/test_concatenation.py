"""tus concatenation: partial uploads (no handler runs for them), a final upload made of
them by URL or path (the handler runs once, on the whole), 403 on PATCH to a final, and
what cannot be concatenated (400). concatenation-unfinished: a final upload made of
partial ones still being uploaded, completed by the server when the last of them is."""

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
    plain = await http.post(ROUTE, headers={**OCTETS, "Upload-Length": "1"}, content=b"x")
    for parts, headers in (
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


async def patch(http: httpx.AsyncClient, location: str, offset: int, data: bytes) -> httpx.Response:
    return await http.patch(
        location, headers={**OCTETS, "Upload-Offset": str(offset)}, content=data
    )


async def test_final_upload_of_unfinished_parts(http: httpx.AsyncClient, server: Server) -> None:
    options = await http.options(ROUTE)
    assert "concatenation-unfinished" in options.headers["tus-extension"].split(",")
    pieces = [os.urandom(60 * KiB), os.urandom(40 * KiB)]
    data = b"".join(pieces)
    # The first part has one byte of its 60 KiB, the second none yet.
    first = await partial_upload(http, pieces[0], finish=False)
    created = await http.post(
        ROUTE,
        headers={**TUS, "Upload-Length": str(len(pieces[1])), "Upload-Concat": "partial"},
    )
    second = created.headers["location"]

    made = await http.post(ROUTE, headers={**TUS, "Upload-Concat": f"final;{first} {second}"})
    assert made.status_code == 201
    assert "x-stream-checksum" not in made.headers
    final = made.headers["location"]
    head = await http.head(final, headers=TUS)
    assert head.status_code == 200
    assert "upload-offset" not in head.headers  # nothing to resume on a final upload
    assert head.headers["upload-length"] == str(len(data))
    assert head.headers["upload-concat"] == f"final;{first} {second}"
    assert (await patch(http, final, 0, b"x")).status_code == 403

    # Parts finish in any order; the last one to complete completes the final upload.
    assert (await patch(http, second, 0, pieces[1])).status_code == 204
    assert "upload-offset" not in (await http.head(final, headers=TUS)).headers
    assert (await patch(http, first, 1, pieces[0][1:])).status_code == 204
    assert server.engine is not None
    await server.engine.wait_settled(30)
    head = await http.head(final, headers=TUS)
    assert head.headers["upload-offset"] == head.headers["upload-length"] == str(len(data))
    assert (await http.get(final)).content == data
    key = final.rsplit("/", 1)[1]
    assert server.engine.storage.finished_path(key).read_bytes() == data
    status = await http.post("/stream-status", json={"key": key})
    assert status.json()["state"] == "complete"
    assert (await patch(http, final, len(data), b"")).status_code == 403


async def test_an_unfinished_part_of_unknown_length(
    http: httpx.AsyncClient, server: Server
) -> None:
    """A final upload of a part whose length is not said yet has no length either until
    that part is done."""
    done = await partial_upload(http, b"head:")
    created = await http.post(
        ROUTE, headers={**TUS, "Upload-Defer-Length": "1", "Upload-Concat": "partial"}
    )
    deferred = created.headers["location"]
    made = await http.post(ROUTE, headers={**TUS, "Upload-Concat": f"final;{done} {deferred}"})
    assert made.status_code == 201
    final = made.headers["location"]
    head = await http.head(final, headers=TUS)
    assert "upload-length" not in head.headers and "upload-offset" not in head.headers
    assert "upload-defer-length" not in head.headers

    tail = os.urandom(10 * KiB)
    last = await http.patch(
        deferred,
        headers={**OCTETS, "Upload-Offset": "0", "Upload-Length": str(len(tail))},
        content=tail,
    )
    assert last.status_code == 204
    assert server.engine is not None
    await server.engine.wait_settled(30)
    head = await http.head(final, headers=TUS)
    assert head.headers["upload-offset"] == head.headers["upload-length"] == str(5 + len(tail))
    assert (await http.get(final)).content == b"head:" + tail


async def test_an_unfinished_part_waits_for_one_final_upload(
    http: httpx.AsyncClient, server: Server
) -> None:
    done = await partial_upload(http, b"abc")
    unfinished = await partial_upload(http, b"abcdef", finish=False)
    first = await http.post(ROUTE, headers={**TUS, "Upload-Concat": f"final;{unfinished}"})
    assert first.status_code == 201
    second = await http.post(ROUTE, headers={**TUS, "Upload-Concat": f"final;{done} {unfinished}"})
    assert second.status_code == 409
    # Once the waiting final upload is terminated, the part may go into another.
    assert (await http.delete(first.headers["location"], headers=TUS)).status_code == 204
    third = await http.post(ROUTE, headers={**TUS, "Upload-Concat": f"final;{done} {unfinished}"})
    assert third.status_code == 201
    assert (await patch(http, unfinished, 1, b"bcdef")).status_code == 204
    assert server.engine is not None
    await server.engine.wait_settled(30)
    assert (await http.get(third.headers["location"])).content == b"abcabcdef"
    # A complete part may go into any number of final uploads.
    again = await http.post(ROUTE, headers={**TUS, "Upload-Concat": f"final;{done} {done}"})
    assert again.status_code == 201
    assert (await http.get(again.headers["location"])).content == b"abcabc"


async def test_concatenation_of_a_principals_parts(http: httpx.AsyncClient, server: Server) -> None:
    """Parts uploaded with a bearer token belong to its principal: the engine pours them
    into the final upload as itself (not as an anonymous reader), and the result is the
    principal's too."""
    from xstream_server.identity import issue_token, server_secret

    auth = {"Authorization": f"Bearer {issue_token(server_secret(server.settings), '@alice')}"}
    pieces = [os.urandom(30 * KiB), os.urandom(5)]
    locations = []
    for piece in pieces:
        created = await http.post(
            ROUTE,
            headers={
                **OCTETS,
                **auth,
                "Upload-Length": str(len(piece)),
                "Upload-Concat": "partial",
            },
            content=piece,
        )
        assert created.status_code == 201
        locations.append(created.headers["location"])
    final = await http.post(
        ROUTE, headers={**TUS, **auth, "Upload-Concat": "final;" + " ".join(locations)}
    )
    assert final.status_code == 201
    location = final.headers["location"]
    assert (await http.get(location)).status_code == 403
    assert (await http.get(location, headers=auth)).content == b"".join(pieces)
