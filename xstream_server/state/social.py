"""The state-store interface of the people-facing services (PROTOCOL §7, §8): presence,
inboxes of notifications, and the records of files sent to a person.

Like the stream store, it holds everything these services know, so that several server
processes sharing one store see the same users online and deliver each other's
notifications; a second backend is a new module implementing ``SocialStore``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "InboxEntry",
    "PresenceRow",
    "SendRecord",
    "SendState",
    "SocialStore",
]


@dataclass(frozen=True, slots=True)
class PresenceRow:
    name: str
    identity: str | None
    seen: float  # epoch seconds of the last register or monitor


@dataclass(frozen=True, slots=True)
class InboxEntry:
    id: str  # ordered per principal
    kind: str
    sender: str | None
    payload: Any


class SendState(StrEnum):
    OFFERED = "offered"
    ACCEPTED = "accepted"
    DENIED = "denied"
    DELIVERED = "delivered"


@dataclass(frozen=True, slots=True)
class SendRecord:
    key: str
    sender: str
    to: str
    name: str
    size: int
    state: SendState
    delivered: int = 0  # bytes the addressee pulled, durably counted
    reason: str | None = None  # why it was denied
    metadata: Mapping[str, str] | None = None


class SocialStore(Protocol):
    # ---- presence ------------------------------------------------------------------------
    async def register(self, name: str, identity: str | None, now: float, expires: float) -> None:
        """``name`` is online until ``expires`` (epoch seconds), then offline unless a
        monitor holds it."""
        ...

    async def hold_monitor(self, name: str, holder: str, now: float, until: float) -> None:
        """An open monitor (``holder`` names it) keeps ``name`` online until ``until``;
        renewed while it is open."""
        ...

    async def drop_monitor(self, name: str, holder: str) -> None: ...

    async def online(self, now: float, names: Sequence[str] | None = None) -> list[PresenceRow]:
        """Who is online (registered and unexpired, or held by a monitor), by name; only
        ``names`` when given."""
        ...

    async def known(self, name: str) -> bool:
        """Whether ``name`` was ever seen (registered or monitored)."""
        ...

    async def set_refused(self, name: str, senders: Sequence[str], refused: bool) -> None:
        """``name`` refuses (or takes again) files from ``senders``."""
        ...

    async def refuses(self, name: str, sender: str) -> bool: ...

    # ---- notifications -------------------------------------------------------------------
    async def add_notification(
        self, name: str, kind: str, sender: str | None, payload: Any, keep: float
    ) -> str:
        """Append a notification to ``name``'s inbox, kept ``keep`` seconds unless
        acknowledged; wake the monitors of ``name`` in every process. Returns its id."""
        ...

    async def notifications(
        self, name: str, after: str | None, count: int, oldest: float
    ) -> list[InboxEntry]:
        """Up to ``count`` notifications of ``name`` after id ``after`` (all when None),
        in order, none older than ``oldest`` (epoch seconds)."""
        ...

    async def acknowledge(self, name: str, ids: Sequence[str]) -> int:
        """Remove these notifications; returns how many there were."""
        ...

    def wakeups(self) -> AsyncIterator[str]:
        """Names that got a notification, from any process (may repeat or be missed when
        the connection to the store drops: readers also look by themselves now and then)."""
        ...

    # ---- sends ---------------------------------------------------------------------------
    async def create_send(self, record: SendRecord, keep: float) -> None: ...

    async def get_send(self, key: str) -> SendRecord | None: ...

    async def set_send_state(
        self, key: str, state: SendState, expected: Sequence[SendState], reason: str | None = None
    ) -> SendState | None:
        """Move the send to ``state`` if it is in one of ``expected``; returns the state it
        was in (None: no such send). Nothing changes when it was not in ``expected``."""
        ...

    async def count_delivered(self, key: str, delivered: int) -> None:
        """Record that the addressee holds ``delivered`` bytes (it only grows)."""
        ...

    async def schedule_purge(self, key: str, at: float) -> None:
        """The content of send ``key`` may be deleted at ``at`` (epoch seconds)."""
        ...

    async def due_purges(self, now: float) -> list[str]: ...

    async def forget_send(self, key: str) -> None: ...

    async def close(self) -> None: ...
