"""An HTTP request body poured into a granted window of the engine, chunk by chunk as the
server receives it: no body is ever held whole in memory.

Bodies are pulled, so backpressure needs no tap: the next chunk is not asked for before
the window's storage has taken the previous one. The window ends by itself when its W
bytes are in; a body that ends first stops it ("body ended") and whatever arrived is made
durable; a client that leaves is ``client_gone``. A takeover, or the server shutting
down, stops the window from the engine's side and the reading stops with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect

from ...engine import Accepted, Completion, Engine, RawWindow
from ...protocol import Status

__all__ = ["OpenWindows", "receive_body"]

log = logging.getLogger("xstream.http")


class _Pulled:
    """The ``ReadControl`` of a pulled body: nothing to pause, the pump simply waits."""

    def pause_reading(self, reason: str) -> None:
        return None

    def resume_reading(self, reason: str) -> None:
        return None


class OpenWindows:
    """Windows being filled by HTTP bodies, so that shutting down can stop them."""

    def __init__(self) -> None:
        self._windows: set[RawWindow] = set()

    def add(self, window: RawWindow) -> None:
        self._windows.add(window)

    def discard(self, window: RawWindow) -> None:
        self._windows.discard(window)

    def stop_all(self, status: Status, message: str) -> None:
        for window in list(self._windows):
            window.stop(status, message)


async def receive_body(
    engine: Engine, accepted: Accepted, body: AsyncIterator[bytes], windows: OpenWindows
) -> Completion | None:
    """Fill ``accepted``'s window from ``body``; the completion once it is settled (its
    ``missing`` counts from the durable offset), or None when the client left. Bytes past
    the window's end are not read."""
    window = engine.receive(accepted, _Pulled())
    windows.add(window)
    pump = asyncio.get_running_loop().create_task(_pump(window, body))
    try:
        return await window.result()
    finally:
        windows.discard(window)
        if not pump.done():
            pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


async def _pump(window: RawWindow, body: AsyncIterator[bytes]) -> None:
    try:
        async for chunk in body:
            if window.ending:
                return
            if len(chunk) > window.remaining:
                chunk = chunk[: window.remaining]
            await window.write(chunk)
            if window.ending or not window.remaining:
                return
    except ClientDisconnect:
        window.client_gone()
        return
    except Exception:
        log.exception("stream %s: reading the request body failed", window.key)
        window.stop(Status.SERVER_ERROR, "reading the request body failed")
        return
    window.stop(Status.OK, "body ended")
