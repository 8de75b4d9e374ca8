"""Shared pieces of the protocol tests: hypothesis strategies and a socket-free driver.

``Driver`` plays the part a real transport plays around a ``ServerConnection``: it feeds
bytes in, answers every event, moves raw bytes of a granted window itself and collects what
the server would write. It lets a test push a whole conversation through the state machine
in arbitrary chunks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from hypothesis import strategies as st

from xstream_server.protocol import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Event,
    InvalidRequest,
    Limits,
    Mode,
    Packet,
    PacketDecoder,
    Request,
    ServerConnection,
    Status,
    StreamRequest,
    WindowReceived,
)

__all__ = [
    "Driver",
    "GrantPolicy",
    "decode_all",
    "header_maps",
    "header_names",
    "header_values",
    "split",
]

# Names as a sender must spell them (§1): 1–64 characters of [a-z0-9-].
header_names = st.from_regex(r"[a-z0-9-]{1,64}", fullmatch=True)

# Any text without control characters (Cc) or lone surrogates (not encodable as UTF-8),
# with no blanks at either end, since a receiver trims those.
header_values = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40).map(
    lambda text: text.strip(" \t")
)

header_maps = st.dictionaries(header_names, header_values, min_size=1, max_size=16)


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given offsets (clamped and sorted, no empty pieces); the pieces
    concatenate back to ``data``."""
    points = sorted({min(max(cut, 0), len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if a != b]


def decode_all(data: bytes) -> list[Packet]:
    """Every packet in ``data``, which must end on a packet boundary."""
    decoder = PacketDecoder(Limits(max_payload=1 << 30))
    decoder.receive_data(data)
    packets = []
    while (packet := decoder.next_packet()) is not None:
        packets.append(packet)
    assert decoder.between_packets, "trailing bytes after the last packet"
    return packets


@dataclass
class GrantPolicy:
    """How the driver answers stream requests."""

    window_cap: int = 1 << 30  # grant at most this many bytes per window
    offset: int = 0  # bytes the server pretends to hold already
    refuse: bool = False


@dataclass
class Driver:
    connection: ServerConnection = field(default_factory=ServerConnection)
    policy: GrantPolicy = field(default_factory=GrantPolicy)
    key: str = "k3y"
    events: list[Event] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    output: bytearray = field(default_factory=bytearray)
    closed: ConnectionClosed | None = None

    def feed(self, data: bytes) -> None:
        """Bytes from the peer, as a transport reads them; ``b""`` is the peer's EOF."""
        conn = self.connection
        if conn.mode is Mode.CLOSED:
            return
        if data and conn.mode is Mode.RAW:
            data = self._take_raw(data)
            if not data:
                return
        conn.receive_data(data)
        self.pump()

    def feed_all(self, chunks: Iterable[bytes], *, eof: bool = True) -> None:
        for chunk in chunks:
            self.feed(chunk)
        if eof:
            self.feed(b"")

    def pump(self) -> None:
        conn = self.connection
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                return
            if event is PAUSED:
                raise AssertionError(f"paused in {conn.mode.name} although every event is answered")
            self.events.append(event)
            if isinstance(event, ConnectionClosed):
                self.closed = event
                return
            self._answer(event)
            if conn.mode is Mode.RAW:
                early = conn.take_early_raw()
                if early:
                    rest = self._take_raw(early)
                    assert not rest
                if conn.mode is Mode.RAW:
                    return  # the rest of the window comes through feed()

    def _answer(self, event: Event) -> None:
        conn = self.connection
        if isinstance(event, Request):
            self.output += conn.respond(event, Status.OK, payload=event.payload)
        elif isinstance(event, InvalidRequest):
            self.output += conn.respond(event, event.status, message=event.message)
        elif isinstance(event, StreamRequest):
            self._negotiate(event)
        else:  # pragma: no cover - WindowReceived comes from raw_received, not next_event
            raise AssertionError(f"unexpected event {event!r}")

    def _negotiate(self, request: StreamRequest) -> None:
        conn = self.connection
        if self.policy.refuse:
            self.output += conn.refuse_stream(Status.METHOD_NOT_ALLOWED)
            return
        offset = min(self.policy.offset, request.total)
        window = min(request.total - offset, self.policy.window_cap)
        self.output += conn.accept_stream(
            key=self.key, offset=offset, window=window, buffer_size=request.buffer_size
        )
        if conn.mode is Mode.COMPLETING:  # nothing to receive: complete at once
            self.output += conn.complete(key=self.key, missing=request.total - offset)

    def _take_raw(self, data: bytes) -> bytes:
        """Store the part of ``data`` that belongs to the window; return the rest."""
        conn = self.connection
        stream = conn.stream
        assert stream is not None
        take = data[: conn.raw_remaining]
        self.raw += take
        done = conn.raw_received(len(take))
        if done is not None:
            self.events.append(done)
            missing = stream.total - min(self.policy.offset, stream.total) - done.window
            self.output += conn.complete(key=self.key, missing=missing)
        return data[len(take) :]


def window_received(events: Iterable[Event]) -> list[WindowReceived]:
    return [e for e in events if isinstance(e, WindowReceived)]
