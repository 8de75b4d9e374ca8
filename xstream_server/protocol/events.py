"""Events the connection state machine hands to a transport, and their parsing (PROTOCOL §2, §3).

A packet's framing is the codec's business; what its headers *mean* is decided here: an
ordinary request, a stream request (first or resume), or a request so malformed that it gets
an error reply, while the framing, and so the connection, stays sound.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from .codec import Packet
from .status import Status

__all__ = [
    "PROTOCOL_HEADERS",
    "ConnectionClosed",
    "ContentSent",
    "DataFormat",
    "Event",
    "InvalidRequest",
    "PullRequest",
    "Request",
    "StreamRequest",
    "WindowReceived",
    "parse_request",
    "parse_x_stream",
    "parse_x_stream_pull",
]


class DataFormat(StrEnum):
    BYTES = "bytes"
    JSON = "json"
    TEXT = "text"


# Headers with a meaning of their own; every other header is metadata for the route.
PROTOCOL_HEADERS: Final = frozenset(
    {
        "route",
        "id",
        "data-format",
        "authorization",
        "x-stream",
        "x-stream-key",
        "x-stream-checksum",
        "x-stream-pull",
    }
)
_MAX_ID: Final = 64
_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_CHECKSUM = re.compile(r"sha256:([0-9a-fA-F]{64})")
_DECIMAL = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class Request:
    """An ordinary request: a packet in, a packet out."""

    route: str
    id: str | None
    data_format: DataFormat
    payload: bytes
    metadata: Mapping[str, str] = field(default_factory=dict)
    authorization: str | None = None


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """``x-stream: T:B``, with ``key`` set when it resumes a stream."""

    route: str
    id: str | None
    data_format: DataFormat
    total: int
    buffer_size: int
    key: str | None = None
    checksum: str | None = None  # lower-case sha256 hex digest, when announced
    metadata: Mapping[str, str] = field(default_factory=dict)
    authorization: str | None = None


@dataclass(frozen=True, slots=True)
class PullRequest:
    """``x-stream-pull: O:B`` (§5): the client holds ``offset`` bytes of the content the
    route names (``key``, metadata) and reads with ``buffer_size``."""

    route: str
    id: str | None
    offset: int
    buffer_size: int
    key: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    authorization: str | None = None


@dataclass(frozen=True, slots=True)
class InvalidRequest:
    """A well-framed packet whose headers are wrong; it is answered and the connection goes on."""

    id: str | None
    status: Status
    message: str
    is_stream: bool


@dataclass(frozen=True, slots=True)
class WindowReceived:
    """All ``W`` raw bytes of the granted window have arrived; the completion packet is due."""

    window: int


@dataclass(frozen=True, slots=True)
class ContentSent:
    """All raw bytes of an accepted pull are sent; the connection is in packet mode again."""

    size: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side; ``clean`` is False when it left in the middle of something."""

    clean: bool


Event = (
    Request
    | StreamRequest
    | PullRequest
    | InvalidRequest
    | WindowReceived
    | ContentSent
    | ConnectionClosed
)


def parse_x_stream(value: str) -> tuple[int, int] | None:
    """``T:B`` with both integers ≥ 1, or None."""
    total, colon, buffer_size = value.partition(":")
    if not colon or not _DECIMAL.fullmatch(total) or not _DECIMAL.fullmatch(buffer_size):
        return None
    t, b = int(total), int(buffer_size)
    if t < 1 or b < 1:
        return None
    return t, b


def parse_x_stream_pull(value: str) -> tuple[int, int] | None:
    """``O:B`` with ``O`` ≥ 0 and ``B`` ≥ 1, or None."""
    offset, colon, buffer_size = value.partition(":")
    if not colon or not _DECIMAL.fullmatch(offset) or not _DECIMAL.fullmatch(buffer_size):
        return None
    o, b = int(offset), int(buffer_size)
    if b < 1:
        return None
    return o, b


def parse_request(packet: Packet) -> Request | StreamRequest | PullRequest | InvalidRequest:
    headers = packet.headers
    request_id = headers.get("id")
    is_pull = "x-stream-pull" in headers
    # Refusals of streams and pulls alike carry ``x-stream: -1``.
    is_stream = "x-stream" in headers or is_pull

    def invalid(message: str) -> InvalidRequest:
        return InvalidRequest(
            request_id if request_id is not None and len(request_id) <= _MAX_ID else None,
            Status.BAD_REQUEST,
            message,
            is_stream,
        )

    if request_id is not None and len(request_id) > _MAX_ID:
        return invalid(f"id longer than {_MAX_ID} characters")
    route = headers.get("route")
    if not route or not route.startswith("/"):
        return invalid("a 'route' header starting with '/' is required")
    try:
        data_format = DataFormat(headers.get("data-format", DataFormat.BYTES.value))
    except ValueError:
        return invalid("data-format must be bytes, json or text")
    metadata = {k: v for k, v in headers.items() if k not in PROTOCOL_HEADERS}
    authorization = headers.get("authorization")

    if is_pull:
        if "x-stream" in headers:
            return invalid("x-stream and x-stream-pull cannot go together")
        if "x-stream-checksum" in headers:
            return invalid("x-stream-checksum is the server's to send on a pull")
        pulled = parse_x_stream_pull(headers["x-stream-pull"])
        if pulled is None:
            return invalid("x-stream-pull must be O:B with integers O >= 0 and B >= 1")
        if packet.payload:
            return invalid("a pull request carries an empty payload")
        pull_key = headers.get("x-stream-key")
        if pull_key is not None and not _KEY.fullmatch(pull_key):
            return invalid("malformed x-stream-key")
        return PullRequest(
            route, request_id, pulled[0], pulled[1], pull_key, metadata, authorization
        )

    if not is_stream:
        for name in ("x-stream-key", "x-stream-checksum"):
            if name in headers:
                return invalid(f"{name} without x-stream")
        return Request(route, request_id, data_format, packet.payload, metadata, authorization)

    parsed = parse_x_stream(headers["x-stream"])
    if parsed is None:
        return invalid("x-stream must be T:B with integers T >= 1 and B >= 1")
    if packet.payload:
        return invalid("a stream request carries an empty payload")
    key = headers.get("x-stream-key")
    if key is not None and not _KEY.fullmatch(key):
        return invalid("malformed x-stream-key")
    checksum = None
    if "x-stream-checksum" in headers:
        match = _CHECKSUM.fullmatch(headers["x-stream-checksum"])
        if match is None:
            return invalid("x-stream-checksum must be sha256:<64 hex digits>")
        checksum = match.group(1).lower()
    total, buffer_size = parsed
    return StreamRequest(
        route, request_id, data_format, total, buffer_size, key, checksum, metadata, authorization
    )
