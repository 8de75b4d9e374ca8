"""The state-store interface: stream records, ownership leases and takeover signals.

The server keeps no stream state of its own that it could not rebuild from here and the
storage; several server processes sharing one store can resume each other's streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

__all__ = [
    "LeaseLost",
    "StateStore",
    "StateUnavailable",
    "StoredResult",
    "StreamRecord",
    "StreamState",
]


class StateUnavailable(Exception):
    """The store cannot be reached; the server answers 503 and acknowledges nothing new."""


class LeaseLost(Exception):
    """Another owner took the stream over (or the record vanished) during a checkpoint."""


class StreamState(StrEnum):
    ACTIVE = "active"
    # Every byte durable, the sha256 recorded and the part turned into the finished file;
    # the completion handler has not succeeded yet (it runs again on the next resume).
    FINALIZED = "finalized"
    COMPLETE = "complete"


@dataclass(frozen=True, slots=True)
class StoredResult:
    """The completion packet's content, kept so that a resume of a complete stream repeats
    it exactly (PROTOCOL §3.4)."""

    status: int
    headers: Mapping[str, str | int]
    payload: bytes
    data_format: str


@dataclass(frozen=True, slots=True)
class StreamRecord:
    key: str
    route: str
    total: int
    offset: int  # durable: fsynced and recorded (PROTOCOL §3.5)
    buffer_size: int
    data_format: str
    created: float  # epoch seconds
    updated: float
    expiry: float  # seconds of inactivity after which an incomplete stream is deleted
    state: StreamState = StreamState.ACTIVE
    metadata: Mapping[str, str] = field(default_factory=dict)
    principal: str | None = None
    checksum: str | None = None  # sha256 hex announced by the client
    result: StoredResult | None = None
    sha256: str | None = None  # of the whole stream, recorded when it is finalized
    attempts: int = 0  # runs of the completion handler begun so far
    # The client will say the length later (tus creation-defer-length); until then
    # ``total`` is the most the stream may hold (the route's max_size).
    length_deferred: bool = False
    # tus concatenation: a partial stream (its completion runs no handler), or the keys of
    # the partial streams a final one was made of.
    partial: bool = False
    concat: tuple[str, ...] | None = None
    # A partial stream that a final one is waiting for (tus concatenation-unfinished).
    final: str | None = None


class StateStore(Protocol):
    async def ping(self) -> None: ...

    async def create(self, record: StreamRecord, owner: str) -> None:
        """Store a new stream's record, its lease held by ``owner``."""
        ...

    async def get(self, key: str) -> StreamRecord | None: ...

    async def checkpoint(self, key: str, owner: str, offset: int, *, force: bool = False) -> None:
        """Record ``offset`` as durable. Offsets only grow unless ``force`` (reconciling a part
        that is shorter than its record). Raises ``LeaseLost`` if ``owner`` no longer holds
        the stream's lease; renews the lease and the record's expiry otherwise."""
        ...

    async def finalize(self, key: str, owner: str, sha256: str) -> int:
        """Record that every byte is durable and finished (offset = total), with the
        stream's sha256: from here a resume never needs the file to report the offset.
        Begins the first run of the completion handler in the same step (one trip, see
        ``begin_attempt``); returns how many runs have begun."""
        ...

    async def begin_attempt(self, key: str, owner: str) -> int:
        """Count one more run of the completion handler; return how many have begun."""
        ...

    async def complete(
        self, key: str, owner: str, result: StoredResult, *, succeeded: bool = True
    ) -> None:
        """Record the final result and release ``owner``'s lease (nothing is left to write).
        A stream whose handler did not succeed keeps its record past its expiry (twice as
        long), so that the sweeper meets it and deletes its file."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete the record, its lease and its index entry; True if this call removed
        either the record or the entry."""
        ...

    async def set_final(self, key: str, final: str, replacing: str | None = None) -> str:
        """Note on partial stream ``key`` that ``final`` waits for it: ``ok`` (also when it
        was noted already, or when ``replacing`` was), ``gone`` (no such stream), or
        ``taken`` (another final waits for it)."""
        ...

    async def set_total(self, key: str, total: int) -> str:
        """Fix the length of a stream created with a deferred one: ``"ok"``, or ``"gone"``,
        ``"known"`` (not deferred, or set already) or ``"short"`` (below its offset)."""
        ...

    async def acquire_lease(self, key: str, owner: str, seconds: float) -> str | None:
        """Take the lease; return None on success, else the current owner."""
        ...

    async def acquire_lease_and_get(
        self, key: str, owner: str, seconds: float
    ) -> tuple[str | None, StreamRecord | None]:
        """``acquire_lease`` and, when it succeeds, ``get`` as read under the new lease, in
        one trip: (None, the record or None if gone), else (the current owner, None)."""
        ...

    async def renew_leases(self, leases: Sequence[tuple[str, str]], seconds: float) -> list[bool]:
        """Renew many ``(key, owner)`` leases in one trip; False where one was lost."""
        ...

    async def release_lease(self, key: str, owner: str) -> None: ...

    async def request_takeover(self, instance: str, key: str) -> None:
        """Ask server instance ``instance`` to stop streaming ``key`` and release it."""
        ...

    def takeover_requests(self, instance: str) -> AsyncIterator[str]:
        """Keys that other instances want this one to let go of."""
        ...

    async def expired(self, now: float) -> list[str]:
        """Keys whose inactivity deadline has passed (their record may already be gone)."""
        ...

    async def forget(self, key: str) -> bool:
        """Drop ``key`` from the expiry index; True if it was there."""
        ...

    async def reschedule(self, key: str, deadline: float) -> None:
        """Move ``key``'s place in the expiry index to ``deadline`` (epoch seconds)."""
        ...

    async def active_keys(self) -> list[str]:
        """Keys in the expiry index: incomplete streams, and complete ones not yet swept."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def close(self) -> None: ...
