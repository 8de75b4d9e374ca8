"""docs/PROTOCOL.md against a running server: the packets the server sends unasked (§3.7),
row by row of the document's table (status, message, the window's headers, the connection
closed after them), and the fields of a ``/stream-status`` answer (§2.4)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.durability.support import Link, until
from xstream_server.protocol import Packet
from xstream_server.server import Server

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
TIMEOUT = 0.3  # idle and stall timeouts of the server under test
TOTAL, SENT = 1000, 10


def table() -> list[tuple[int, str, bool]]:
    """(status, message, during a window) of each row of §3.7's table."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### 3.7 Packets the server sends unasked") :]
    section = section[: section.index("\n## ")]
    rows = re.findall(r"^\|[^|]+\| `(\d+)` \| `([^`]+)` \| (yes|no) \|$", section, re.MULTILINE)
    return [(int(code), message, during == "yes") for code, message, during in rows]


async def open_window(server: Server) -> tuple[Link, str]:
    """A connection in the middle of a window, SENT bytes of TOTAL stored."""
    link = await Link.connect(server.port)
    accept = await link.request({"route": "/upload-file", "x-stream": f"{TOTAL}:65536"})
    assert accept.headers["status"] == "0"
    await link.send_raw(b"x" * SENT)
    return link, accept.headers["x-stream-key"]


OTHERS: list[Link] = []  # links a scenario opens besides the one it returns


Scenario = Callable[[Server], Awaitable[tuple[Link, str | None]]]


async def idle(server: Server) -> tuple[Link, str | None]:
    link = await Link.connect(server.port)
    echo = await link.request({"route": "/echo", "data-format": "json"})
    assert echo.headers["status"] == "400"  # answered: the connection is idle from here
    return link, None


async def stalled(server: Server) -> tuple[Link, str | None]:
    return await open_window(server)


async def superseded(server: Server) -> tuple[Link, str | None]:
    link, key = await open_window(server)
    engine = server.engine
    assert engine is not None
    await until(lambda: engine.sessions[key].written >= SENT)
    newer = await Link.connect(server.port)
    OTHERS.append(newer)
    resume: dict[str, str | int] = {
        "route": "/upload-file",
        "x-stream": f"{TOTAL}:65536",
        "x-stream-key": key,
    }
    await newer.send(resume)
    return link, key


async def shut_idle(server: Server) -> tuple[Link, str | None]:
    link, _ = await idle(server)
    asyncio.get_running_loop().create_task(server.close())
    return link, None


async def shut_window(server: Server) -> tuple[Link, str | None]:
    link, key = await open_window(server)
    engine = server.engine
    assert engine is not None
    await until(lambda: key in engine.sessions)
    asyncio.get_running_loop().create_task(server.close())
    return link, key


SCENARIOS: dict[tuple[int, str, bool], Scenario] = {
    (408, "idle for 60 s", False): idle,
    (408, "no raw bytes for 30 s", True): stalled,
    (409, "superseded by a newer request for this stream", True): superseded,
    (503, "server shutting down", False): shut_idle,
    (503, "server shutting down", True): shut_window,
}


def test_the_table_lists_every_unasked_packet() -> None:
    rows = table()
    assert len(rows) == len(set(rows))
    assert set(rows) == set(SCENARIOS)


@pytest.mark.parametrize("row", table(), ids=lambda row: f"{row[0]}-{row[1]}-{row[2]}")
async def test_the_server_sends_what_the_table_says(
    make_server: ServerFactory, row: tuple[int, str, bool]
) -> None:
    code, message, during = row
    expected = message.replace("60", f"{TIMEOUT:g}").replace("30", f"{TIMEOUT:g}")
    async with (
        asyncio.timeout(30),
        make_server(idle_timeout=TIMEOUT, raw_stall_timeout=TIMEOUT) as server,
    ):
        link, key = await SCENARIOS[row](server)
        OTHERS.append(link)
        packet: Packet = await link.receive(10)
        await link.wait_closed(10)  # the last packet on its connection
        headers = dict(packet.headers)
        assert (int(headers.pop("status")), headers.pop("message")) == (code, expected)
        if during:
            assert headers == {"x-stream": f"{TOTAL - SENT}:0", "x-stream-key": key}
        else:
            assert headers == {}
    for other in OTHERS:
        other.abort()
    OTHERS.clear()


async def test_stream_status_answers_the_documented_fields(make_server: ServerFactory) -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### 2.4 `/stream-status`") :]
    example = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert example is not None
    documented = json.loads(example.group(1))
    async with asyncio.timeout(30), make_server() as server:
        link, key = await open_window(server)
        OTHERS.append(link)
        asker = await Link.connect(server.port)
        OTHERS.append(asker)
        engine = server.engine
        assert engine is not None
        await until(lambda: engine.sessions[key].written >= SENT)
        link.abort()  # the window is settled: SENT bytes are durable
        await until(lambda: key not in engine.sessions)
        await asker.send(
            {"route": "/stream-status", "data-format": "json"}, json.dumps({"key": key}).encode()
        )
        answer = await asker.receive(10)
    for other in OTHERS:
        other.abort()
    OTHERS.clear()
    assert answer.headers["status"] == "0"
    status = json.loads(answer.payload)
    assert list(status) == list(documented)
    assert {name: type(value) for name, value in status.items()} == {
        name: type(value) for name, value in documented.items()
    }
    assert (status["key"], status["offset"], status["total"]) == (key, SENT, TOTAL)
    assert (status["route"], status["state"]) == ("/upload-file", "active")
