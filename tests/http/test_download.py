"""``GET /R/<key>``: a complete upload whole or by ``Range``; 409 while incomplete, 416 for
a range past the end, 410/404 as for tus, and 403 for someone else's upload."""

from __future__ import annotations

import os

import httpx

from xstream_server import App, CompletedUpload, RouteError, Status

from ..conftest import ServerFactory
from .conftest import OCTETS, TUS, base_url

KiB = 1024
ROUTE = "/upload-file"


async def test_download_whole_and_ranges(http: httpx.AsyncClient) -> None:
    data = os.urandom(2500 * KiB + 11)  # more than one of the engine's read chunks
    created = await http.post(
        ROUTE, headers={**OCTETS, "Upload-Length": str(len(data))}, content=data[:10]
    )
    location = created.headers["location"]
    incomplete = await http.get(location)
    assert incomplete.status_code == 409
    await http.patch(location, headers={**OCTETS, "Upload-Offset": "10"}, content=data[10:])

    whole = await http.get(location)
    assert whole.status_code == 200
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.content == data
    size = len(data)
    for header, first, last in (
        ("bytes=0-0", 0, 0),
        ("bytes=1048570-2097160", 1048570, 2097160),
        (f"bytes={size - 5}-", size - 5, size - 1),
        ("bytes=-7", size - 7, size - 1),
        (f"bytes=5-{size * 2}", 5, size - 1),
    ):
        part = await http.get(location, headers={"Range": header})
        assert part.status_code == 206, header
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert part.content == data[first : last + 1]
    for header in (f"bytes={size}-", "bytes=9-3", "bytes=-0"):
        refused = await http.get(location, headers={"Range": header})
        assert refused.status_code == 416, header
        assert refused.headers["content-range"] == f"bytes */{size}"
    ignored = await http.get(location, headers={"Range": "bytes=0-1,5-6"})
    assert ignored.status_code == 200  # several ranges: the whole content instead

    assert (await http.get(ROUTE + "/AAAAAAAAAAAAAAAAAAAAAAAA")).status_code == 410
    assert (await http.get(ROUTE + "/bad*key")).status_code == 404
    await http.delete(location, headers=TUS)
    assert (await http.get(location)).status_code == 410


async def test_download_only_for_the_uploads_principal(make_server: ServerFactory) -> None:
    app = App()

    async def auth(authorization: str | None) -> str:
        if authorization is None:
            raise RouteError(Status.UNAUTHORIZED, "who are you?")
        return authorization

    @app.stream("/mine", auth=auth)
    async def done(upload: CompletedUpload) -> None:
        return None

    async with make_server(app=app) as server:
        async with httpx.AsyncClient(base_url=base_url(server)) as http:
            created = await http.post(
                "/mine",
                headers={**OCTETS, "Upload-Length": "3", "Authorization": "ann"},
                content=b"abc",
            )
            location = created.headers["location"]
            assert (await http.get(location)).status_code == 401
            assert (await http.get(location, headers={"Authorization": "bob"})).status_code == 403
            mine = await http.get(location, headers={"Authorization": "ann"})
            assert mine.content == b"abc"
