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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.requests import ClientDisconnect

from ...engine import Accepted, Completion, Engine, PartCheck, RawWindow
from ...metrics import HTTP
from ...protocol import Status

__all__ = ["OpenWindows", "Received", "receive_body"]

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


@dataclass(frozen=True, slots=True)
class Received:
    """A settled window: its completion (None when the client left) and whether the whole
    body was read (if not, the connection must close after the answer: the rest of the
    body would otherwise be taken for the next request)."""

    completion: Completion | None
    body_read: bool


async def receive_body(
    engine: Engine,
    accepted: Accepted,
    body: AsyncIterator[bytes],
    windows: OpenWindows,
    check: PartCheck | None = None,
    stall_timeout: float | None = None,
    body_end: Callable[[bool], None] | None = None,
) -> Received:
    """Fill ``accepted``'s window from ``body`` and settle it; the completion's ``missing``
    counts from the durable offset. Bytes past the window's end are not read. With
    ``check``, the bytes count only if the whole body matches it (else 460). A body that
    sends nothing for ``stall_timeout`` seconds ends the window with 408. ``body_end`` is
    called once, with True as soon as the body is known to have ended within the window
    (its trailer fields are in then), and with False if it is not read to its end."""
    window = engine.receive(accepted, _Pulled(), check, transport=HTTP)
    windows.add(window)
    pump = asyncio.get_running_loop().create_task(
        _pump(window, body, stall_timeout, body_end or _ignore)
    )
    if body_end is not None:
        pump.add_done_callback(lambda _: body_end(False))
    try:
        completion = await window.result()
    finally:
        windows.discard(window)
        if not pump.done():
            pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    return Received(completion, not pump.cancelled() and pump.result())


def _ignore(ended: bool) -> None:
    return None


async def _pump(
    window: RawWindow,
    body: AsyncIterator[bytes],
    stall: float | None,
    body_end: Callable[[bool], None],
) -> bool:
    """Pour ``body`` into ``window``; True when the body was read to its end."""
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None
    me = asyncio.current_task()

    def stalled() -> None:
        window.stop(Status.TIMEOUT, f"no body bytes for {stall:g} s")
        if window.ending and me is not None:
            # Full already, and waiting for the body's end (a trailer may be awaited).
            me.cancel()

    def rearm() -> None:  # a timer handle reset on data, not a task per chunk
        nonlocal timer
        if stall is not None:
            if timer is not None:
                timer.cancel()
            timer = loop.call_later(stall, stalled)

    chunks = aiter(body)
    rearm()
    try:
        async for chunk in chunks:
            rearm()
            if window.ending:
                return False
            fits = len(chunk) <= window.remaining
            await window.write(chunk if fits else chunk[: window.remaining])
            if not window.remaining:
                # All W bytes are in (the window settles by itself): was that the body?
                whole = fits and await anext(chunks, b"") == b""
                body_end(whole)
                return whole
            if window.ending:
                return False
    except ClientDisconnect:
        window.client_gone()
        return False
    except Exception:
        log.exception("stream %s: reading the request body failed", window.key)
        window.stop(Status.SERVER_ERROR, "reading the request body failed")
        return False
    finally:
        if timer is not None:
            timer.cancel()
    body_end(True)
    window.body_ended()
    return True
