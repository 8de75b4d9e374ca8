"""The streams this process is writing now: their sessions, how many each client holds, the
space their windows were promised, the running sha256 of streams between windows, and who
waits for a stream's durable bytes (live downloads)."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from hashlib import _Hash

    from .session import StreamSession

__all__ = ["LiveStreams"]

_HASHER_CACHE: Final = 4096


class LiveStreams:
    def __init__(self) -> None:
        self.sessions: dict[str, StreamSession] = {}
        self._per_client: Counter[str] = Counter()
        self._hashers: OrderedDict[str, tuple[int, _Hash]] = OrderedDict()
        self.pending_grants = 0  # bytes of windows being granted right now
        self._watchers: dict[str, set[asyncio.Event]] = {}

    def client_streams(self, client: str) -> int:
        return self._per_client[client]

    def promised(self) -> int:
        """Bytes granted to windows (being granted, or open) that have not been written."""
        return self.pending_grants + sum(s.unwritten for s in self.sessions.values())

    def add(self, session: StreamSession) -> None:
        self.sessions[session.key] = session
        self._per_client[session.client] += 1

    def watch(self, key: str, wake: asyncio.Event) -> None:
        """Set ``wake`` whenever more of ``key`` may be durable (a checkpoint, the end of a
        window, completion, deletion) until ``unwatch``."""
        self._watchers.setdefault(key, set()).add(wake)

    def unwatch(self, key: str, wake: asyncio.Event) -> None:
        watchers = self._watchers.get(key)
        if watchers is not None:
            watchers.discard(wake)
            if not watchers:
                del self._watchers[key]

    def notify(self, key: str) -> None:
        for wake in self._watchers.get(key, ()):
            wake.set()

    def remove(self, session: StreamSession) -> None:
        self.notify(session.key)
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        self._per_client[session.client] -= 1
        if self._per_client[session.client] <= 0:
            del self._per_client[session.client]
        hasher = session.hasher
        # The next window starts at the durable offset; the hash must end there too.
        if hasher is not None and session.durable == session.written < session.record.total:
            self._hashers[session.key] = (session.durable, hasher)
            self._hashers.move_to_end(session.key)
            while len(self._hashers) > _HASHER_CACHE:
                self._hashers.popitem(last=False)

    def take_hasher(self, key: str, offset: int) -> _Hash | None:
        """The sha256 of bytes [0, offset) of ``key`` if this process has it, else None (the
        prefix is then hashed from storage at completion)."""
        if offset == 0:
            return hashlib.sha256()
        cached = self._hashers.pop(key, None)
        if cached is not None and cached[0] == offset:
            return cached[1]
        return None

    def forget(self, key: str) -> None:
        self._hashers.pop(key, None)
        self.notify(key)
