"""docs/PROTOCOL.md against a running server: the worked examples of §5, replayed packet by
packet; the packets the server sends unasked (§3.7), row by row of the document's table
(status, message, the window's headers, the connection closed after them); and the fields
of a ``/stream-status`` answer (§2.4)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.conftest import ServerFactory
from tests.durability.support import Link, until
from xstream_server import App, CompletedUpload, Reply, RequestContext
from xstream_server.protocol import Packet
from xstream_server.server import Server

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
TIMEOUT = 1.0  # idle and stall timeouts of the server under test
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


# ---- §5, the worked examples, replayed against a running server -------------------------

_BLOCK = re.compile(r"```\n(.*?)```", re.DOTALL)
_PREFIX_LINE = re.compile(r"prefix\s+((?:[0-9a-f]{2} ){7}[0-9a-f]{2})\s+H = \d+, P = \d+$")
_RAW_LINE = re.compile(r"((?:[0-9a-f]{2} )*[0-9a-f]{2})\s+\"[^\"]*\"$")


def examples_app() -> App:
    """The routes §5 uses: /echo answers in kind; /upload takes at most six bytes a
    window, in pieces as small as the client asks, and its handler answers nothing."""
    app = App()

    @app.request("/echo")
    async def echo(request: RequestContext) -> Reply:
        return Reply(request.payload, request.data_format)

    @app.stream("/upload", max_window=6, min_buffer=1)
    async def stored(upload: CompletedUpload) -> None:
        return None

    return app


def packet_of(block: str) -> tuple[list[tuple[str, str]], bytes]:
    """The headers, in order, and the payload of a packet shown as §5 shows them."""
    first, *rest = block.rstrip("\n").split("\n")
    assert _PREFIX_LINE.fullmatch(first), first
    headers: list[tuple[str, str]] = []
    payload = b""
    for line in rest:
        if line.startswith("payload"):
            payload = line.removeprefix("payload").strip().encode()
        else:
            name, _, value = line.removeprefix("headers").strip().partition(": ")
            headers.append((name, value))
    return headers, payload


def steps(subsection: str) -> list[tuple[str, str]]:
    """("connect" | "packet" | "raw", block) in the order the text shows them."""
    found: list[tuple[int, str, str]] = [(0, "connect", "")]
    found += [(m.start(), "connect", "") for m in re.finditer(r"\*\*Connection [2-9]", subsection)]
    for match in _BLOCK.finditer(subsection):
        text = match.group(1)
        kind = "packet" if text.startswith("prefix") else "raw"
        found.append((match.start(), kind, text))
    return [(kind, text) for _, kind, text in sorted(found, key=lambda step: step[0])]


def subsections() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## 5. Worked examples") : text.index("## 6. ")]
    return section.split("\n### ")[1:]


@pytest.mark.parametrize("subsection", subsections(), ids=lambda s: s.split("\n")[0])
async def test_worked_example_is_what_the_server_sends(
    make_server: ServerFactory, subsection: str
) -> None:
    keys: dict[str, str] = {}  # the document's key → the one the server made
    links: list[Link] = []
    async with asyncio.timeout(30), make_server(app=examples_app()) as server:
        for kind, block in steps(subsection):
            if kind == "connect":
                links.append(await Link.connect(server.port))
                continue
            link = links[-1]
            if kind == "raw":
                match = _RAW_LINE.fullmatch(block.strip())
                assert match is not None, block
                await link.send_raw(bytes.fromhex(match.group(1)))
                continue
            headers, payload = packet_of(block)
            if headers[0][0] == "route":  # the client's packet: sent as shown
                await link.send({name: keys.get(value, value) for name, value in headers}, payload)
                continue
            packet = await link.receive(10)
            sent = list(packet.headers.items())
            for (name, documented), (_, actual) in zip(headers, sent, strict=False):
                if name == "x-stream-key":
                    keys.setdefault(documented, actual)
            expected = [(name, keys.get(value, value)) for name, value in headers]
            assert (sent, packet.payload) == (expected, payload)
    for link in links:
        link.abort()
