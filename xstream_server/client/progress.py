"""Progress of an upload: snapshots, and a feed that hands them to callbacks and iterators.

``acknowledged`` counts bytes the server confirmed as durably stored (PROTOCOL §3.5) and
never decreases. ``sent`` counts bytes handed to the connection; after a dropped
connection it falls back to the server's offset and the lost bytes are sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple

__all__ = ["Progress", "ProgressCallback", "ProgressFeed"]


class Progress(NamedTuple):
    acknowledged: int
    sent: int
    total: int

    @property
    def done(self) -> bool:
        return self.acknowledged >= self.total


ProgressCallback = Callable[[Progress], None]


class ProgressFeed:
    """Holds the latest ``Progress``; wakes callbacks and iterators when it changes.

    Iterators see the most recent snapshot, not every intermediate one, so a slow consumer
    never makes the upload buffer snapshots.
    """

    def __init__(self, total: int, callback: ProgressCallback | None = None) -> None:
        self._current = Progress(0, 0, total)
        self._callback = callback
        self._waiters: set[asyncio.Future[None]] = set()
        self._finished = False

    @property
    def current(self) -> Progress:
        return self._current

    def update(self, *, acknowledged: int | None = None, sent: int | None = None) -> None:
        old = self._current
        ack = old.acknowledged if acknowledged is None else max(old.acknowledged, acknowledged)
        new_sent = old.sent if sent is None else sent
        new = Progress(ack, max(new_sent, ack), old.total)
        if new == old:
            return
        self._current = new
        if self._callback is not None:
            self._callback(new)
        self._wake()

    def finish(self) -> None:
        """No more updates; iterators end after yielding the last snapshot."""
        self._finished = True
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def __aiter__(self) -> AsyncIterator[Progress]:
        seen: Progress | None = None
        while True:
            current = self._current
            if current != seen:
                seen = current
                yield current
                continue
            if self._finished:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)
