"""A simulated clock and network for the sans-IO uTP core: two connections, datagrams that
are lost, duplicated, delayed and reordered as a seeded ``random.Random`` decides."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from xstream_server.utp import PacketType, UtpConnection, UtpSettings, decode_packet


@dataclass
class Link:
    """One direction: base delay, jitter (which reorders), loss and duplication rates; a
    ``queue_delay`` function of the time adds delay (a filling queue, for LEDBAT)."""

    delay: float = 0.010
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    queue_delay: Callable[[float], float] = lambda now: 0.0
    drop: Callable[[PacketType], bool] = lambda packet_type: False


@dataclass(order=True)
class _InTransit:
    arrival: float
    order: int
    to: int = field(compare=False)
    datagram: bytes = field(compare=False)


class SimNet:
    def __init__(
        self,
        seed: int,
        forward: Link | None = None,
        backward: Link | None = None,
        settings: UtpSettings | None = None,
        client_seq: int | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 1000.0
        self.links = (forward or Link(), backward or Link())  # 0: client to server
        self.settings = settings or UtpSettings()
        self._queue: list[_InTransit] = []
        self._order = 0
        self.sent = [0, 0]
        seq_rng = random.Random(seed)
        if client_seq is not None:
            seq_rng = _FixedFirst(client_seq)
        self.client = UtpConnection.connect(
            self.rng.randrange(1 << 16), self.now, seq_rng, self.settings
        )
        self.server: UtpConnection | None = None
        self.received: list[bytearray] = [bytearray(), bytearray()]  # by client, by server
        self.server_seq: int | None = None

    def endpoints(self) -> list[UtpConnection]:
        return [self.client] if self.server is None else [self.client, self.server]

    def _transmit(self, side: int, datagrams: list[bytes]) -> None:
        link = self.links[side]
        for datagram in datagrams:
            self.sent[side] += 1
            if link.drop(decode_packet(datagram).type) or self.rng.random() < link.loss:
                continue
            copies = 2 if self.rng.random() < link.duplicate else 1
            for _ in range(copies):
                delay = link.delay + link.queue_delay(self.now) + self.rng.random() * link.jitter
                self._order += 1
                heapq.heappush(
                    self._queue, _InTransit(self.now + delay, self._order, 1 - side, datagram)
                )

    def _flush(self) -> None:
        self._transmit(0, self.client.flush(self.now))
        if self.server is not None:
            self._transmit(1, self.server.flush(self.now))
        for side, endpoint in enumerate(self.endpoints()):
            self.received[side] += endpoint.read()

    def step(self) -> bool:
        """Advance to the next event; False when nothing is left to happen."""
        for endpoint in self.endpoints():
            check_accounting(endpoint)
        self._flush()
        deadlines = [(e.deadline, i) for i, e in enumerate(self.endpoints()) if e.deadline]
        next_timer = min(deadlines, default=None)
        next_packet = self._queue[0].arrival if self._queue else None
        if next_timer is None and next_packet is None:
            return False
        if next_packet is not None and (next_timer is None or next_packet <= next_timer[0]):
            item = heapq.heappop(self._queue)
            self.now = max(self.now, item.arrival)
            packet = decode_packet(item.datagram)
            if item.to == 1:
                if self.server is None:
                    if packet.type is not PacketType.SYN:
                        return True
                    rng: random.Random = random.Random(self.rng.random())
                    if self.server_seq is not None:
                        rng = _FixedFirst(self.server_seq)
                    self.server = UtpConnection.accept(packet, self.now, rng, self.settings)
                else:
                    self.server.receive(packet, self.now)
            else:
                self.client.receive(packet, self.now)
        else:
            assert next_timer is not None
            self.now = max(self.now, next_timer[0])
            self.endpoints()[next_timer[1]].on_timer(self.now)
        self._flush()
        return True

    def run_until(self, condition: Callable[[], bool], limit: float = 600.0) -> None:
        start = self.now
        while not condition():
            if not self.step():
                raise AssertionError("the network went quiet before the condition held")
            if self.now - start > limit:
                raise AssertionError(f"not done after {limit} simulated seconds")


class _FixedFirst(random.Random):
    """A ``Random`` whose first ``randrange`` is given: a chosen initial sequence number."""

    def __init__(self, first: int) -> None:
        super().__init__(0)
        self._first: int | None = first

    def randrange(self, *args: int) -> int:  # type: ignore[override]
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return super().randrange(*args)


def check_accounting(connection: UtpConnection) -> None:
    """The running totals the connection keeps match what they count."""
    in_flight = list(connection._in_flight.values())
    assert connection._unacked_bytes == sum(len(p.payload) for p in in_flight)
    assert connection._flight_bytes == sum(len(p.payload) for p in in_flight if not p.needs_resend)
    assert connection._awaiting_resend == sum(p.needs_resend for p in in_flight)
