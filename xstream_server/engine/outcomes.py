"""What the engine answers a transport with: plain data, no I/O.

``Response`` answers an ordinary request; ``Refused`` and ``Accepted`` answer a stream
request (or a tus creation/append); ``Completion`` is the end of a window, successful or
not; ``StreamStatus`` is what a stream's durable state looks like from outside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..protocol import DataFormat, Status
from ..state import StoredResult

if TYPE_CHECKING:
    from ..app import NotificationFeed
    from .session import StreamSession

__all__ = [
    "Accepted",
    "Completion",
    "Refused",
    "Response",
    "StreamStatus",
    "completion_of",
]


@dataclass(frozen=True, slots=True)
class Response:
    status: Status
    payload: bytes = b""
    data_format: DataFormat | None = None
    headers: Mapping[str, str | int] = field(default_factory=dict)
    message: str | None = None
    # Notifications to push on the connection from now on (a monitor, PROTOCOL §8).
    feed: NotificationFeed | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    status: Status
    message: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """A granted window: ``window`` bytes from the durable ``offset``, read in pieces of
    ``buffer_size``. The session holds the stream's lease until the window is settled."""

    session: StreamSession
    offset: int
    window: int
    buffer_size: int


@dataclass(frozen=True, slots=True)
class Completion:
    """The completion packet: status, bytes still missing, and the result when complete."""

    key: str
    missing: int
    status: Status = Status.OK
    message: str | None = None
    payload: bytes = b""
    data_format: DataFormat | None = None
    headers: Mapping[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """A stream seen from outside: its route, size, durable offset and state."""

    key: str
    route: str
    total: int
    offset: int
    complete: bool
    expires: float | None  # epoch seconds; None once complete
    metadata: Mapping[str, str]
    length_deferred: bool = False  # ``total`` is then the most it may hold
    partial: bool = False  # a part of a tus concatenation
    concat: tuple[str, ...] | None = None  # the partial keys a final stream is made of
    # Every byte stored and finalized, the completion handler not succeeded yet (it runs
    # again on the next resume); ``attempts`` counts its runs begun so far.
    completing: bool = False
    attempts: int = 0


def completion_of(key: str, result: StoredResult) -> Completion:
    """The completion packet a complete stream repeats on every resume (PROTOCOL §3.4)."""
    headers = dict(result.headers)
    message = headers.pop("message", None)
    return Completion(
        key,
        0,
        Status(result.status),
        None if message is None else str(message),
        result.payload,
        DataFormat(result.data_format),
        headers,
    )
