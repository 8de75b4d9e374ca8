"""A finished json stream of up to ``max_decoded_size`` is read and decoded in a thread of
its own (issue 14), and a top-level array or object is decoded in pieces of ~64 KiB
(engine/json_pieces.py): between two pieces the interpreter hands the GIL to the event loop,
so other connections are served while the document is decoded, not only while its file is
read. (``json.loads`` alone would hold the GIL for the whole decoding, ~0.3-0.4 s for
16 MiB, and this test would fail.) The thread is not one of the default pool's, which
storage I/O needs meanwhile."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.wire import Wire, status
from xstream_server import App, CompletedUpload, DataFormat, Reply, RequestContext
from xstream_server.engine import json_pieces

MiB = 1024 * 1024
ITEM = b'{"id":123456,"name":"abcdefgh"}'


COUNT = (16 * MiB - 2) // (len(ITEM) + 1)


def big_json() -> bytes:
    """A JSON array of small objects, as close to 16 MiB as it gets."""
    return b"[" + b",".join([ITEM] * COUNT) + b"]"


# Round trips that must complete while the document is decoded (hundreds do).
ECHOES_WHILE_DECODING = 10


class Marks(logging.Handler):
    """Notes how many echo round trips were done when the decoding began (its file read
    already) and when it ended, as the decoding thread logs them."""

    def __init__(self, echoes: list[int]) -> None:
        super().__init__(logging.DEBUG)
        self.echoes = echoes
        self.at_decode: int | None = None
        self.at_decoded: int | None = None
        self.thread = ""

    def emit(self, record: logging.LogRecord) -> None:
        if "decoding" in record.getMessage():
            self.at_decode = len(self.echoes)
            self.thread = record.threadName or ""
        elif record.getMessage().endswith(": decoded"):
            self.at_decoded = len(self.echoes)


async def test_echo_is_answered_while_a_16_mib_json_stream_is_decoded(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    echoes: list[int] = []  # round trips done, one entry each
    at_pieces: list[int] = []  # round trips done as each piece of the document was decoded

    def piece(text: str) -> Any:
        at_pieces.append(len(echoes))
        return json.loads(text)

    monkeypatch.setattr(json_pieces, "_loads", piece)
    at_handler: list[int] = []
    handler_ran = asyncio.Event()
    app = App()

    @app.request("/echo")
    async def echo(request: RequestContext) -> Reply:
        return Reply(request.payload, DataFormat.JSON)

    @app.stream("/doc", max_buffer=MiB)
    async def doc(upload: CompletedUpload) -> Any:
        at_handler.append(len(echoes))  # the decoding is over when the handler runs
        handler_ran.set()
        return {"items": len(upload.content)}

    body = big_json()
    assert 15 * MiB < len(body) <= 16 * MiB
    marks = Marks(echoes)
    caplog.set_level(logging.DEBUG, logger="xstream.engine")
    logging.getLogger("xstream.engine").addHandler(marks)
    try:
        async with asyncio.timeout(60), make_server(app=app) as server:
            async with await Wire.connect(server.port) as other:

                async def keep_echoing() -> None:
                    while not handler_ran.is_set():
                        reply = await other.request(
                            {"route": "/echo", "data-format": "json"}, b"[1]"
                        )
                        assert status(reply) == 0
                        echoes.append(1)

                async with await Wire.connect(server.port) as wire:
                    accept = await wire.request(
                        {"route": "/doc", "x-stream": f"{len(body)}:{MiB}", "data-format": "json"}
                    )
                    assert status(accept) == 0
                    echoing = asyncio.create_task(keep_echoing())
                    await wire.send_raw(body)
                    done = await wire.receive()
                    await echoing
    finally:
        logging.getLogger("xstream.engine").removeHandler(marks)
    assert status(done) == 0, done.headers
    assert done.payload == f'{{"items":{COUNT}}}'.encode()
    assert marks.at_decode is not None and marks.at_decoded is not None
    # Round trips were completed while json was decoded: after the file was read, before the
    # decoding thread was done (not merely before the handler ran).
    during = marks.at_decoded - marks.at_decode
    assert during >= ECHOES_WHILE_DECODING, (marks.at_decode, marks.at_decoded, at_handler)
    assert at_handler[0] >= marks.at_decoded
    # Between its pieces, not in one burst: json.loads alone (one piece) would not do.
    assert len(set(at_pieces)) >= ECHOES_WHILE_DECODING, at_pieces
    # In a thread of its own, not the default pool that storage I/O goes through.
    assert marks.thread.startswith("xstream-decode"), marks.thread
