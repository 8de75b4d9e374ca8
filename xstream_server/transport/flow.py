"""Flow control of one connection (in the manner of uvicorn's ``FlowControl``): reading is
paused while any reason to pause holds, and resumed when the last one is lifted; writers
wait while the transport's write buffer is over its high-water mark."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

__all__ = ["INPUT", "YIELD", "FlowControl"]

# Reasons of the driver's own (the engine's windows add STORAGE and SETTLING).
INPUT: Final = "input"  # pipelined requests wait to be answered
YIELD: Final = "yield"  # sitting out one loop iteration (the read budget)


class FlowControl:
    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._pause = pause
        self._resume = resume
        self._reasons: set[str] = set()
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed = False  # once set, the transport is left alone

    @property
    def reading_paused(self) -> bool:
        return bool(self._reasons)

    def pause_reading(self, reason: str) -> None:
        if not self._reasons and not self.closed:
            self._pause()
        self._reasons.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._reasons:
            return
        self._reasons.discard(reason)
        if not self._reasons and not self.closed:
            self._resume()

    def resume_all(self) -> None:
        if self._reasons:
            self._reasons.clear()
            if not self.closed:
                self._resume()

    # ---- writing -----------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        return self._writable.is_set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def drain(self) -> None:
        await self._writable.wait()
