"""Ordinary requests through the client against the real server."""

from __future__ import annotations

import asyncio

import pytest

from xstream_server.client import (
    ClientConnection,
    RequestError,
    XStreamError,
    connect,
    parse_address,
)
from xstream_server.server import Server


def address(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


async def test_json_request_round_trip(server: Server) -> None:
    async with connect(address(server)) as conn:
        reply = await conn.request("/echo", json={"hello": ["world", 1]}, id="r1")
    assert reply.status == 0
    assert reply.id == "r1"
    assert reply.data_format == "json"
    assert reply.content == {"hello": ["world", 1]}


async def test_pipelined_requests_come_back_in_order(server: Server) -> None:
    conn: ClientConnection = await connect(address(server))
    try:
        replies = await asyncio.gather(
            *(conn.request("/echo", json={"n": n}, id=f"id-{n}") for n in range(50))
        )
    finally:
        await conn.close()
    assert [r.content for r in replies] == [{"n": n} for n in range(50)]
    assert [r.id for r in replies] == [f"id-{n}" for n in range(50)]


async def test_unknown_route_raises_typed_error(server: Server) -> None:
    async with connect(address(server)) as conn:
        with pytest.raises(RequestError) as caught:
            await conn.request("/no-such-route", json={})
        # The connection stays usable after a refusal.
        reply = await conn.request("/echo", json=[1, 2])
    assert caught.value.status == 404
    assert caught.value.message
    assert reply.content == [1, 2]


async def test_error_status_without_check_is_returned(server: Server) -> None:
    async with connect(address(server)) as conn:
        reply = await conn.request("/echo", text="not json", check=False)
    assert reply.status == 400
    assert reply.message
    with pytest.raises(XStreamError) as caught:
        reply.raise_for_status()
    assert caught.value.status == 400


def test_parse_address() -> None:
    assert parse_address("example.org") == ("example.org", 7070)
    assert parse_address("127.0.0.1:9") == ("127.0.0.1", 9)
    assert parse_address("[::1]:8000") == ("::1", 8000)
    assert parse_address("[::1]") == ("::1", 7070)
    for bad in ("", ":80", "host:0", "host:x", "[::1"):
        with pytest.raises(ValueError, match=r"address|port"):
            parse_address(bad)
