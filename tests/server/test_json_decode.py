"""A finished json stream of up to ``max_decoded_size`` is read and decoded in a thread of
its own (issue 14): other connections are served while its file is read, and the thread is
not one of the default pool's, which storage I/O needs meanwhile. What this cannot do:
``json.loads`` holds the GIL while it builds the objects (about 0.3-0.4 s for 16 MiB on the
development machine), and the event loop waits for that part (said at StreamRoute's
max_decoded_size)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.wire import Wire, status
from xstream_server import App, CompletedUpload, DataFormat, Reply, RequestContext

MiB = 1024 * 1024
ITEM = b'{"id":123456,"name":"abcdefgh"}'


COUNT = (16 * MiB - 2) // (len(ITEM) + 1)


def big_json() -> bytes:
    """A JSON array of small objects, as close to 16 MiB as it gets."""
    return b"[" + b",".join([ITEM] * COUNT) + b"]"


class Marks(logging.Handler):
    """Notes how many echo round trips were done when the decoding began."""

    def __init__(self, echoes: list[int]) -> None:
        super().__init__(logging.DEBUG)
        self.echoes = echoes
        self.at_decode: int | None = None
        self.thread = ""

    def emit(self, record: logging.LogRecord) -> None:
        if "decoding" in record.getMessage():
            self.at_decode = len(self.echoes)
            self.thread = record.threadName or ""


async def test_echo_is_answered_while_a_16_mib_json_stream_is_decoded(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    echoes: list[int] = []  # round trips done, one entry each
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
    assert marks.at_decode is not None
    # Round trips were completed between the start of the decoding (its file read) and its end.
    assert at_handler[0] > marks.at_decode, (marks.at_decode, at_handler)
    # In a thread of its own, not the default pool that storage I/O goes through.
    assert marks.thread.startswith("xstream-decode"), marks.thread
