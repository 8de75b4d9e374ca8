"""Helpers of the people tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from xstream_server import Notification
from xstream_server.client.people import People

__all__ = ["eventually", "next_of_kind"]

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float = 10.0
) -> T:
    """Ask ``probe`` until ``ok`` holds of its answer (a condition the server reaches on its
    own, like an expiry); fails after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            value = await probe()
            if ok(value):
                return value
            await asyncio.sleep(0.05)


async def next_of_kind(me: People, kind: str, timeout: float = 10.0) -> Notification:
    """The next notification of ``kind`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            note = await me.next_notification()
            if note.kind == kind:
                return note
