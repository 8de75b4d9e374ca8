"""The HTTP face of an app's own routes: auth through ``Authorization`` (401, 403 for someone
else's upload), an accept hook that refuses (its status) or fails (500, logged with its
traceback), request routes and ``/stream-status`` over ``POST``, CORS, and the face mounted
into another Starlette application."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from xstream_server import App, CompletedUpload, RequestContext, RouteError, Status, StreamOffer
from xstream_server.server import Server
from xstream_server.settings import ServerSettings
from xstream_server.transport.http import HttpTransportServer

from ..conftest import ServerFactory
from .conftest import OCTETS, TUS, base_url

KiB = 1024


async def _auth(authorization: str | None) -> str:
    if authorization is None or not authorization.startswith("Bearer "):
        raise RouteError(Status.UNAUTHORIZED, "a bearer token is required")
    return authorization.removeprefix("Bearer ")


async def _accept(offer: StreamOffer) -> int | None:
    if offer.metadata.get("mood") == "grumpy":
        raise RouteError(Status.FORBIDDEN, "not today")
    if offer.metadata.get("mood") == "broken":
        raise RuntimeError("the hook has a bug")
    return None


def make_app() -> App:
    app = App()

    @app.stream("/private", auth=_auth, accept=_accept, max_size=100 * KiB)
    async def private(upload: CompletedUpload) -> Any:
        return {"size": upload.size}

    @app.stream("/fragile", completion_attempts=1)  # its 500 is final at once
    async def fragile(upload: CompletedUpload) -> Any:
        raise RuntimeError("completion handler bug")

    @app.request("/hello")
    async def hello(request: RequestContext) -> Any:
        if request.content == "boom":
            raise RuntimeError("handler bug")
        return {"got": request.content, "x-colour": request.metadata.get("x-colour")}

    return app


@pytest.fixture
async def http(make_server: ServerFactory) -> Any:
    async with make_server(app=make_app()) as server:
        async with httpx.AsyncClient(base_url=base_url(server), timeout=30) as client:
            yield client


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user}"}


async def test_auth_and_accept_hook(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await http.post("/private", headers={**TUS, "Upload-Length": "10"})
    assert response.status_code == 401
    assert response.json()["detail"] == "a bearer token is required"
    created = await http.post("/private", headers={**TUS, "Upload-Length": "10", **auth("ann")})
    assert created.status_code == 201
    location = created.headers["location"]
    assert (await http.head(location, headers={**TUS, **auth("bob")})).status_code == 403
    patch = {**OCTETS, "Upload-Offset": "0"}
    response = await http.patch(location, headers={**patch, **auth("bob")}, content=b"x")
    assert response.status_code == 403
    response = await http.patch(location, headers={**patch, **auth("ann")}, content=b"0123456789")
    assert response.status_code == 204
    assert response.headers["upload-offset"] == "10"

    grumpy = await http.post(
        "/private",
        headers={**OCTETS, "Upload-Length": "3", "Upload-Metadata": "mood Z3J1bXB5", **auth("a")},
        content=b"abc",
    )
    assert grumpy.status_code == 403
    assert grumpy.json()["detail"] == "not today"
    with caplog.at_level(logging.ERROR):
        broken = await http.post(
            "/private",
            headers={
                **OCTETS,
                "Upload-Length": "3",
                "Upload-Metadata": "mood YnJva2Vu",
                **auth("a"),
            },
            content=b"abc",
        )
    assert broken.status_code == 500
    assert "the hook has a bug" in caplog.text  # the traceback is logged
    too_big = await http.post("/private", headers={**TUS, "Upload-Length": str(100 * KiB + 1)})
    assert too_big.status_code == 413


async def test_completion_handler_failure_is_500_with_the_final_offset(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await http.post(
            "/fragile", headers={**OCTETS, "Upload-Length": "5"}, content=b"hello"
        )
    assert response.status_code == 500
    assert response.headers["upload-offset"] == "5"
    assert response.json()["detail"] == "completion handler error"
    assert "completion handler bug" in caplog.text


async def test_request_routes_and_stream_status(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await http.post("/hello", json={"a": 1}, headers={"X-Colour": "blue"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"got": {"a": 1}, "x-colour": "blue"}
    response = await http.post(
        "/hello", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    with caplog.at_level(logging.ERROR):
        response = await http.post(
            "/hello", content=b"boom", headers={"Content-Type": "text/plain"}
        )
    assert response.status_code == 500
    assert "handler bug" in caplog.text
    response = await http.post("/private")
    assert response.status_code == 412  # a stream route speaks tus on POST

    created = await http.post("/private", headers={**TUS, "Upload-Length": "10", **auth("ann")})
    key = created.headers["location"].rsplit("/", 1)[1]
    status = await http.post("/stream-status", json={"key": key}, headers=auth("ann"))
    assert status.status_code == 200
    assert status.json()["offset"] == 0
    assert status.json()["state"] == "active"
    assert (await http.post("/stream-status", json={"key": "nope"})).status_code == 410
    assert (await http.post("/stream-status", content=b"[]")).status_code == 400


async def test_cors_preflight_and_exposed_headers(http: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    preflight = await http.options(
        "/private",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "tus-resumable,upload-length,upload-metadata",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] in ("*", origin["Origin"])
    assert "POST" in preflight.headers["access-control-allow-methods"]
    created = await http.post(
        "/private", headers={**TUS, **origin, "Upload-Length": "10", **auth("ann")}
    )
    exposed = created.headers["access-control-expose-headers"].lower()
    for name in ("location", "upload-offset", "tus-resumable", "upload-expires"):
        assert name in exposed


async def test_mounted_into_another_starlette_app(redis_url: str, tmp_path: Path) -> None:
    """The two lines of the README: mount ``server.http_app`` and run the server as the
    host application's lifespan. Locations carry the mount's prefix."""
    settings = ServerSettings(port=0, http=False, data_dir=tmp_path / "data", redis_url=redis_url)
    server = Server(make_app(), settings)

    async def home(request: object) -> PlainTextResponse:
        return PlainTextResponse("host app")

    host = Starlette(
        routes=[Route("/", home), Mount("/xs", app=server.http_app)],
        lifespan=server.lifespan,
    )
    web = HttpTransportServer(host, 5.0, lifespan=True)
    _, port = await web.start("127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/")).text == "host app"
            data = os.urandom(20 * KiB)
            created = await http.post(
                "/xs/private",
                headers={**OCTETS, "Upload-Length": str(len(data)), **auth("ann")},
                content=data,
            )
            assert created.status_code == 201
            assert created.headers["location"].startswith("/xs/private/")
            assert created.headers["upload-offset"] == str(len(data))
            head = await http.head(created.headers["location"], headers={**TUS, **auth("ann")})
            assert head.headers["upload-offset"] == str(len(data))
            status = await http.post(
                "/xs/stream-status",
                content=json.dumps({"key": created.headers["location"].rsplit("/", 1)[1]}),
                headers=auth("ann"),
            )
            assert status.json()["state"] == "complete"
    finally:
        await web.close()
    assert server.engine is not None and server.engine.shutting_down  # lifespan ended it
