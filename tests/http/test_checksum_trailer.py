"""tus checksum-trailer: ``Upload-Checksum`` sent as a trailer field of a chunked PATCH (or
creation-with-upload) body, announced by ``Trailer: Upload-Checksum``. The requests are
written by hand on real sockets (no HTTP client here sends request trailers). A mismatch
is 460 with the part discarded and the offset unchanged, as with the header; a trailer
that was announced and did not come is 400, the part discarded too."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from handlers import app as default_app
from xstream_server.server import Server
from xstream_server.settings import ServerSettings
from xstream_server.transport.http.trailers import MAX_TRAILER_BYTES

from ..conftest import ServerFactory
from .conftest import TUS, base_url

KiB = 1024
ROUTE = "/upload-file"


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


class Raw:
    """One keep-alive HTTP/1.1 connection, requests written byte by byte as given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int | None) -> Raw:
        assert port is not None
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def __aenter__(self) -> Raw:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    async def chunked(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        chunks: list[bytes],
        trailers: dict[str, str],
    ) -> tuple[int, dict[str, str]]:
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        out = ("\r\n".join(head) + "\r\n\r\n").encode()
        for chunk in chunks:
            out += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        out += b"0\r\n"
        out += "".join(f"{name}: {value}\r\n" for name, value in trailers.items()).encode()
        out += b"\r\n"
        self.writer.write(out)
        await self.writer.drain()
        return await self.response()

    async def response(self) -> tuple[int, dict[str, str]]:
        block = await self.reader.readuntil(b"\r\n\r\n")
        lines = block.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers


def patch_headers(offset: int) -> dict[str, str]:
    return {
        **TUS,
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": str(offset),
        "Trailer": "Upload-Checksum",
    }


async def create(http: httpx.AsyncClient, length: int) -> str:
    created = await http.post(ROUTE, headers={**TUS, "Upload-Length": str(length)})
    assert created.status_code == 201
    return str(created.headers["location"])


async def offset_of(http: httpx.AsyncClient, location: str) -> int:
    return int((await http.head(location, headers=TUS)).headers["upload-offset"])


def pieces(data: bytes, size: int = 7 * KiB) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_options_list_checksum_trailer(http: httpx.AsyncClient) -> None:
    extensions = (await http.options(ROUTE)).headers["tus-extension"].split(",")
    assert "checksum" in extensions and "checksum-trailer" in extensions


async def test_trailer_checksums_verify_parts_and_a_mismatch_is_460(
    http: httpx.AsyncClient, server: Server
) -> None:
    data = os.urandom(100 * KiB)
    location = await create(http, len(data))
    async with await Raw.connect(server.http_port) as raw:
        first, rest = data[: 40 * KiB], data[40 * KiB :]
        # The body ends before the upload does: its trailer is in when the body ends.
        status, headers = await raw.chunked(
            "PATCH",
            location,
            patch_headers(0),
            pieces(first),
            {"Upload-Checksum": checksum("sha1", first)},
        )
        assert (status, headers["upload-offset"]) == (204, str(len(first)))

        corrupted = rest[:-1] + bytes([rest[-1] ^ 1])
        status, headers = await raw.chunked(
            "PATCH",
            location,
            patch_headers(len(first)),
            pieces(corrupted),
            {"Upload-Checksum": checksum("sha256", rest)},
        )
        assert status == 460
        assert headers["upload-offset"] == str(len(first))
        assert await offset_of(http, location) == len(first)

        # The same connection goes on; this body fills the upload exactly (the window ends
        # on its last byte, before the trailer is read).
        status, headers = await raw.chunked(
            "PATCH",
            location,
            patch_headers(len(first)),
            pieces(rest),
            {"Upload-Checksum": checksum("sha256", rest)},
        )
        assert (status, headers["upload-offset"]) == (204, str(len(data)))
        assert headers["x-stream-checksum"] == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert server.engine is not None
    key = location.rsplit("/", 1)[1]
    assert server.engine.storage.finished_path(key).read_bytes() == data


async def test_a_mismatch_on_the_last_byte_of_the_upload_is_460(
    http: httpx.AsyncClient, server: Server
) -> None:
    data = os.urandom(30 * KiB)
    location = await create(http, len(data))
    async with await Raw.connect(server.http_port) as raw:
        status, headers = await raw.chunked(
            "PATCH",
            location,
            patch_headers(0),
            pieces(data),
            {"Upload-Checksum": checksum("sha1", data[::-1])},
        )
    assert status == 460 and headers["upload-offset"] == "0"
    assert await offset_of(http, location) == 0


async def test_an_announced_trailer_that_does_not_come_is_400(
    http: httpx.AsyncClient, server: Server
) -> None:
    data = os.urandom(20 * KiB)
    location = await create(http, 2 * len(data))
    async with await Raw.connect(server.http_port) as raw:
        status, headers = await raw.chunked("PATCH", location, patch_headers(0), pieces(data), {})
        assert status == 400 and headers["upload-offset"] == "0"
        # Malformed, or of an unknown algorithm: no usable checksum either.
        status, _ = await raw.chunked(
            "PATCH", location, patch_headers(0), pieces(data), {"Upload-Checksum": "sha1 !!"}
        )
        assert status == 400
        status, _ = await raw.chunked(
            "PATCH", location, patch_headers(0), [data], {"Upload-Checksum": "md5 AAAA"}
        )
        assert status == 400
    assert await offset_of(http, location) == 0


async def test_a_trailer_and_a_header_at_once_or_without_chunks_are_400(
    http: httpx.AsyncClient, server: Server
) -> None:
    data = os.urandom(KiB)
    location = await create(http, len(data))
    async with await Raw.connect(server.http_port) as raw:
        status, _ = await raw.chunked(
            "PATCH",
            location,
            {**patch_headers(0), "Upload-Checksum": checksum("sha1", data)},
            [data],
            {"Upload-Checksum": checksum("sha1", data)},
        )
        assert status == 400
    unchunked = await http.patch(
        location, headers={**patch_headers(0), "Content-Length": str(len(data))}, content=data
    )
    assert unchunked.status_code == 400
    assert "chunked" in unchunked.json()["detail"]
    assert await offset_of(http, location) == 0


async def test_creation_with_upload_takes_a_trailer(
    http: httpx.AsyncClient, server: Server
) -> None:
    data = os.urandom(50 * KiB)
    headers = {**patch_headers(0), "Upload-Length": str(2 * len(data))}
    del headers["Upload-Offset"]
    async with await Raw.connect(server.http_port) as raw:
        status, good = await raw.chunked(
            "POST", ROUTE, headers, pieces(data), {"Upload-Checksum": checksum("sha1", data)}
        )
        assert (status, good["upload-offset"]) == (201, str(len(data)))
        status, bad = await raw.chunked(
            "POST", ROUTE, headers, pieces(data), {"Upload-Checksum": checksum("sha1", b"x")}
        )
        assert (status, bad["upload-offset"]) == (460, "0")
    assert await offset_of(http, bad["location"]) == 0


async def test_served_by_another_uvicorn_no_trailers_are_promised(
    redis_url: str, tmp_path: Path
) -> None:
    """Mounted into an application that plain uvicorn serves, the face cannot see
    trailers: OPTIONS does not list checksum-trailer and a PATCH announcing one is 400."""
    settings = ServerSettings(port=0, http=False, data_dir=tmp_path / "data", redis_url=redis_url)
    xstream = Server(default_app, settings)
    host = Starlette(routes=[Mount("/xs", app=xstream.http_app)], lifespan=xstream.lifespan)
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(host, http="httptools", lifespan="on", log_config=None)
    config.load()
    web = uvicorn.Server(config)
    web.lifespan = config.lifespan_class(config)
    await web.startup(sockets=[sock])
    try:
        port = sock.getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            options = await http.options("/xs" + ROUTE)
            assert "checksum-trailer" not in options.headers["tus-extension"].split(",")
            created = await http.post("/xs" + ROUTE, headers={**TUS, "Upload-Length": "5"})
            location = created.headers["location"]
            async with await Raw.connect(port) as raw:
                status, _ = await raw.chunked(
                    "PATCH",
                    location,
                    patch_headers(0),
                    [b"hello"],
                    {"Upload-Checksum": checksum("sha1", b"hello")},
                )
            assert status == 400
            assert await offset_of(http, location) == 0
    finally:
        web.should_exit = True
        await web.shutdown(sockets=[sock])


async def test_a_body_that_fills_the_upload_then_stalls_before_its_trailer(
    make_server: ServerFactory,
) -> None:
    """All the bytes in, the body's end (and its trailer) never sent: after the stall
    timeout the part is discarded, 400, the offset unchanged."""
    async with make_server(raw_stall_timeout=0.5) as server:
        async with httpx.AsyncClient(base_url=base_url(server)) as http:
            data = os.urandom(10 * KiB)
            location = await create(http, len(data))
            async with await Raw.connect(server.http_port) as raw:
                head = [
                    f"PATCH {location} HTTP/1.1",
                    "Host: 127.0.0.1",
                    "Transfer-Encoding: chunked",
                    *(f"{name}: {value}" for name, value in patch_headers(0).items()),
                ]
                raw.writer.write(
                    ("\r\n".join(head) + "\r\n\r\n").encode()
                    + f"{len(data):x}\r\n".encode()
                    + data
                    + b"\r\n"
                )
                await raw.writer.drain()
                status, headers = await raw.response()
            assert status == 400 and headers["upload-offset"] == "0"
            assert await offset_of(http, location) == 0


async def test_trailer_fields_past_the_limit_are_dropped(
    http: httpx.AsyncClient, server: Server
) -> None:
    data = os.urandom(KiB)
    location = await create(http, 2 * len(data))
    filler = {f"X-Filler-{i}": "f" * 1000 for i in range(MAX_TRAILER_BYTES // 1000 + 1)}
    async with await Raw.connect(server.http_port) as raw:
        status, _ = await raw.chunked(
            "PATCH",
            location,
            patch_headers(0),
            [data],
            {**filler, "Upload-Checksum": checksum("sha1", data)},
        )
        assert status == 400  # the checksum came after 8 KiB of other fields
        status, headers = await raw.chunked(
            "PATCH",
            location,
            patch_headers(0),
            [data],
            {"Upload-Checksum": checksum("sha1", data), **filler},
        )
        assert (status, headers["upload-offset"]) == (204, str(len(data)))
