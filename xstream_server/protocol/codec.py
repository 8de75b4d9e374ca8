"""Packet framing (PROTOCOL §1): an 8-byte prefix, a header block, a payload.

``encode_packet`` turns headers and a payload into bytes. ``PacketDecoder`` is fed bytes as
they arrive and hands out whole packets; it checks every limit on the *declared* lengths, so
a packet that is going to be refused is never waited for, read or buffered.

No I/O here: this module is driven by whatever transport owns the socket.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from .errors import RemoteProtocolError
from .status import Status

__all__ = [
    "PREFIX",
    "Limits",
    "Packet",
    "PacketDecoder",
    "encode_header_block",
    "encode_packet",
    "parse_header_block",
]

PREFIX: Final = struct.Struct(">II")
_NAME = re.compile(r"[a-z0-9-]{1,64}")
# Control characters (Unicode category Cc: C0, DEL and C1); blanks are trimmed at the ends.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Only space and tab count as blanks: str.strip() would also eat control and Unicode spaces.
_BLANKS: Final = " \t"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits of §1; a route may lower or raise ``max_payload`` for itself."""

    max_header_block: int = 16 * 1024
    max_headers: int = 64
    max_payload: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Packet:
    headers: Mapping[str, str]
    payload: bytes = b""
    # Extra, non-wire information; lets tests compare packets by their wire content only.
    wire_size: int = field(default=0, compare=False)


def encode_header_block(headers: Mapping[str, str | int]) -> bytes:
    lines = []
    for name, value in headers.items():
        text = str(value)
        if not _NAME.fullmatch(name) or _CONTROL.search(text) or text != text.strip(_BLANKS):
            raise ValueError(f"header {name!r}: {text!r} cannot be sent")
        lines.append(f"{name}: {text}")
    return "\n".join(lines).encode()


def encode_packet(headers: Mapping[str, str | int], payload: bytes = b"") -> bytes:
    block = encode_header_block(headers)
    return PREFIX.pack(len(block), len(payload)) + block + payload


def parse_header_block(block: bytes, max_headers: int) -> dict[str, str]:
    """Parse and validate one header block; raises ``RemoteProtocolError``."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(Status.BAD_REQUEST, "header block is not UTF-8") from None
    text = text.replace("\r\n", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    headers: dict[str, str] = {}
    if not text:
        return headers
    lines = text.split("\n")
    if len(lines) > max_headers:
        raise RemoteProtocolError(
            Status.HEADERS_TOO_LARGE, f"{len(lines)} headers, at most {max_headers} allowed"
        )
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise RemoteProtocolError(Status.BAD_REQUEST, f"header line without ':': {line!r}")
        name = name.strip(_BLANKS)
        # Lower-case ASCII only: "\u212a".lower() is "k", which must not pass as a name.
        name = name.lower() if name.isascii() else name
        if not _NAME.fullmatch(name):
            raise RemoteProtocolError(Status.BAD_REQUEST, f"invalid header name {name!r}")
        value = value.strip(_BLANKS)
        if _CONTROL.search(value):
            raise RemoteProtocolError(
                Status.BAD_REQUEST, f"header {name!r} has a control character"
            )
        if name in headers:
            raise RemoteProtocolError(Status.BAD_REQUEST, f"header {name!r} appears twice")
        headers[name] = value
    return headers


PayloadLimit = Callable[[Mapping[str, str]], int]


class PacketDecoder:
    """Incremental packet parser.

    ``receive_data`` appends bytes; ``next_packet`` returns a ``Packet`` or ``None`` when more
    bytes are needed. ``payload_limit``, when given, decides each packet's payload limit from
    its headers (a route's own limit); it is asked once the header block is parsed and before
    a single payload byte is awaited.
    """

    def __init__(
        self, limits: Limits | None = None, payload_limit: PayloadLimit | None = None
    ) -> None:
        self.limits = limits or Limits()
        self._payload_limit = payload_limit
        self._buffer = bytearray()
        # Prefix and header block of the packet whose payload is still due.
        self._pending: tuple[dict[str, str], int, int] | None = None

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def between_packets(self) -> bool:
        """True when no part of a packet has been received yet (a clean place to stop)."""
        return self._pending is None and not self._buffer

    def take_buffered(self) -> bytes:
        """Hand over every byte not yet parsed (used when the connection leaves packet mode)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def next_packet(self) -> Packet | None:
        buf = self._buffer
        if self._pending is None:
            if len(buf) < PREFIX.size:
                return None
            header_len, payload_len = PREFIX.unpack_from(buf)
            if header_len > self.limits.max_header_block:
                raise RemoteProtocolError(
                    Status.HEADERS_TOO_LARGE,
                    f"header block of {header_len} bytes, at most "
                    f"{self.limits.max_header_block} allowed",
                )
            if header_len == 0:
                raise RemoteProtocolError(Status.BAD_REQUEST, "empty header block")
            end = PREFIX.size + header_len
            if len(buf) < end:
                return None
            headers = parse_header_block(bytes(buf[PREFIX.size : end]), self.limits.max_headers)
            limit = (
                self._payload_limit(headers)
                if self._payload_limit is not None
                else self.limits.max_payload
            )
            if payload_len > limit:
                raise RemoteProtocolError(
                    Status.TOO_LARGE, f"payload of {payload_len} bytes, at most {limit} allowed"
                )
            del buf[:end]
            self._pending = (headers, payload_len, end)
        headers, payload_len, head_size = self._pending
        if len(buf) < payload_len:
            return None
        payload = bytes(buf[:payload_len])
        del buf[:payload_len]
        self._pending = None
        return Packet(headers, payload, wire_size=head_size + payload_len)
