"""One uTP connection as a sans-IO state machine (BEP 29 with LEDBAT, RFC 6817).

No sockets, no clock, no asyncio: the owner feeds ``receive(packet, now)``, calls
``on_timer(now)`` at ``deadline``, takes datagrams from ``flush(now)`` and in-order bytes
from ``read()``. ``now`` is in seconds on any monotonic clock.

Sequence numbers: a DATA, FIN or SYN packet takes the next number; a STATE packet carries
the number the next one will take (as libutp does), so the connecting side learns the
peer's initial number from the SYN's answer and never assumes it.
"""

from __future__ import annotations

import bisect
import enum
import random
from collections import deque
from dataclasses import dataclass
from typing import Final

from .packets import SEQ_MASK, Packet, PacketType, sack_bits, sack_mask, seq_distance

__all__ = ["ConnectionState", "UtpConnection", "UtpSettings"]

_U32: Final = 0xFFFFFFFF
# BEP 29: the timeout is at least 500 ms; the first one (no RTT sample yet) is 1 s.
MIN_TIMEOUT: Final = 0.5
INITIAL_TIMEOUT: Final = 1.0
CCONTROL_TARGET_US: Final = 100_000  # LEDBAT's target queuing delay
MAX_CWND_INCREASE_PER_RTT: Final = 3000  # bytes, at zero queuing delay
_DUPLICATE_ACKS: Final = 3
_BASE_DELAY_MINUTES: Final = 2  # the base delay is the minimum over this many minutes
_CURRENT_DELAY_SAMPLES: Final = 4


class ConnectionState(enum.Enum):
    SYN_SENT = "syn-sent"
    CONNECTED = "connected"
    FIN_SENT = "fin-sent"  # our FIN is out, waiting for its ack
    CLOSED = "closed"  # ended cleanly (both FINs acknowledged, or a close timed out)
    RESET = "reset"  # destroyed by either side, or the peer stopped answering


@dataclass(frozen=True, slots=True)
class UtpSettings:
    packet_size: int = 1400  # payload bytes per DATA packet
    receive_buffer: int = 1024 * 1024  # the receive window we advertise at most
    max_cwnd: int = 4 * 1024 * 1024
    initial_cwnd: int = 16 * 1400
    max_retransmissions: int = 8  # timeouts in a row before the connection is dropped
    close_timeout: float = 10.0  # how long close() waits for the FIN's ack
    # An accepted connection is established by the peer's first packet after its SYN
    # (proof that it got our answer); until then it ends after this long.
    handshake_timeout: float = 10.0


@dataclass(slots=True)
class _Outgoing:
    type: PacketType
    seq_nr: int
    payload: bytes
    sent_at: float = 0.0
    transmissions: int = 0
    needs_resend: bool = False  # declared lost: not counted in flight until resent
    urgent: bool = False  # fast retransmit: resent at once, whatever the window


def _micros(now: float) -> int:
    return int(now * 1_000_000) & _U32


def _signed32(value: int) -> int:
    value &= _U32
    return value - (1 << 32) if value & 0x80000000 else value


class _DelayTracker:
    """LEDBAT's delay estimates from the peer's timestamp differences: a base delay (the
    minimum over the last two minutes, kept per minute so it can rise again) and the
    current delay (the minimum of the last few samples, against noise). The values carry
    the unknown offset of the two clocks, so they are compared modulo 2**32."""

    def __init__(self) -> None:
        self._minutes: deque[tuple[int, int]] = deque()  # (minute, minimum sample)
        self._recent: deque[int] = deque(maxlen=_CURRENT_DELAY_SAMPLES)

    def add(self, sample: int, now: float) -> None:
        minute = int(now // 60)
        if self._minutes and self._minutes[-1][0] == minute:
            last = self._minutes[-1][1]
            if _signed32(sample - last) < 0:
                self._minutes[-1] = (minute, sample)
        else:
            self._minutes.append((minute, sample))
            while self._minutes and self._minutes[0][0] <= minute - _BASE_DELAY_MINUTES:
                self._minutes.popleft()
        self._recent.append(sample)

    @property
    def queuing_delay(self) -> int:
        """Microseconds of current delay above the base (0 without samples)."""
        if not self._recent:
            return 0
        base = self._minutes[0][1]
        for _, value in self._minutes:
            if _signed32(value - base) < 0:
                base = value
        return max(0, min(_signed32(sample - base) for sample in self._recent))


class UtpConnection:
    """Create with ``connect`` (sends SYN) or ``accept`` (answers a SYN)."""

    def __init__(
        self,
        *,
        recv_id: int,
        send_id: int,
        seq_nr: int,
        state: ConnectionState,
        now: float,
        settings: UtpSettings,
    ) -> None:
        self.recv_id = recv_id & SEQ_MASK
        self.send_id = send_id & SEQ_MASK
        self.state = state
        self.settings = settings
        self.error: str | None = None  # why the connection was reset
        self._seq_nr = seq_nr & SEQ_MASK  # the number of the next DATA/FIN packet
        self._ack_nr = 0  # the last in-order packet received from the peer
        # ---- sending
        self._send_buffer = bytearray()
        self._in_flight: dict[int, _Outgoing] = {}  # by seq_nr, oldest first
        self._flight_bytes = 0  # payload of the packets in flight not declared lost
        self._unacked_bytes = 0  # payload of every packet in flight
        self._awaiting_resend = 0  # packets declared lost, not yet resent
        self.stats = {"sent": 0, "resent": 0, "timeouts": 0, "fast_retransmits": 0}
        self._peer_window = settings.packet_size
        self.cwnd = settings.initial_cwnd
        self._slow_start = True
        self._rtt = 0.0
        self._rtt_var = 0.0
        self._timeout = INITIAL_TIMEOUT
        self._timeout_deadline: float | None = None
        self._timeouts_in_a_row = 0
        self._duplicate_acks = 0
        self._last_ack_seen: int | None = None
        self._recovery_until: int | None = None  # no second window cut before this is acked
        self._delays = _DelayTracker()
        self._reply_micro = 0  # our last one-way delay sample of the peer's packets
        self._closing = False  # close() called: FIN once the send buffer is empty
        self._close_deadline: float | None = None
        # ---- receiving
        self._received = bytearray()  # in-order bytes not yet read
        self._out_of_order: dict[int, bytes] = {}
        self._out_of_order_bytes = 0
        self._peer_fin: int | None = None  # the seq_nr of the peer's FIN
        self.eof = False  # the peer's FIN arrived and every byte before it
        self.fin_acked = False  # our FIN is acknowledged: close() is done
        self._ack_due = False
        # DATA packets in since our last ack: the owner acks at once past a few, so one
        # lost ack does not leave a whole window unacknowledged until the timeout.
        self.unacked_arrivals = 0
        self._advertised = settings.receive_buffer
        self._outbox: list[bytes] = []  # ready datagrams (SYN, RESET, answers to a SYN)
        self.established = True  # False for an accepted one until the peer speaks again
        self._handshake_deadline: float | None = None

    # ---- creation ------------------------------------------------------------------------
    @classmethod
    def connect(
        cls,
        recv_id: int,
        now: float,
        rng: random.Random | None = None,
        settings: UtpSettings | None = None,
    ) -> UtpConnection:
        """The connecting side: ``recv_id`` is ours, the peer sends to it; we send to +1."""
        rng = rng or random.Random()
        connection = cls(
            recv_id=recv_id,
            send_id=recv_id + 1,
            seq_nr=rng.randrange(1 << 16),
            state=ConnectionState.SYN_SENT,
            now=now,
            settings=settings or UtpSettings(),
        )
        syn = _Outgoing(PacketType.SYN, connection._seq_nr, b"")
        connection._in_flight[syn.seq_nr] = syn
        connection._seq_nr = (connection._seq_nr + 1) & SEQ_MASK
        connection._outbox.append(connection._send(syn, now))
        return connection

    @classmethod
    def accept(
        cls,
        syn: Packet,
        now: float,
        rng: random.Random | None = None,
        settings: UtpSettings | None = None,
    ) -> UtpConnection:
        rng = rng or random.Random()
        connection = cls(
            recv_id=syn.connection_id + 1,
            send_id=syn.connection_id,
            seq_nr=rng.randrange(1 << 16),
            state=ConnectionState.CONNECTED,
            now=now,
            settings=settings or UtpSettings(),
        )
        connection._ack_nr = syn.seq_nr
        connection.established = False
        connection._handshake_deadline = now + connection.settings.handshake_timeout
        connection._note_timestamps(syn, now)
        connection._peer_window = max(syn.wnd_size, connection.settings.packet_size)
        connection._ack_due = True
        return connection

    # ---- what the owner asks -------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self.state in (ConnectionState.SYN_SENT, ConnectionState.CONNECTED)

    @property
    def finished(self) -> bool:
        return self.state in (ConnectionState.CLOSED, ConnectionState.RESET)

    @property
    def buffered_bytes(self) -> int:
        """Written but not yet acknowledged by the peer."""
        return len(self._send_buffer) + self._unacked_bytes

    @property
    def readable(self) -> int:
        return len(self._received)

    @property
    def deadline(self) -> float | None:
        """When ``on_timer`` must next be called (None: no timer)."""
        # Asked after every datagram: plain comparisons, no lists.
        deadline = self._timeout_deadline
        for other in (self._close_deadline, self._handshake_deadline):
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    @property
    def queuing_delay(self) -> float:
        """LEDBAT's current estimate, in seconds."""
        return self._delays.queuing_delay / 1_000_000

    # ---- application calls -----------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self.finished:
            raise ConnectionError("uTP connection closed for writing")
        self._send_buffer += data

    def read(self, limit: int = -1) -> bytes:
        """In-order bytes received (all of them by default); reading reopens the window."""
        if limit < 0 or limit >= len(self._received):
            data = bytes(self._received)
            self._received.clear()
        else:
            data = bytes(self._received[:limit])
            del self._received[:limit]
        if data and self._receive_window() - self._advertised >= self.settings.receive_buffer // 4:
            self._ack_due = True  # a window update, so a stalled sender goes on
        return data

    def close(self, now: float) -> None:
        """Send what is buffered, then FIN; the connection is CLOSED once the FIN is
        acknowledged, or after ``close_timeout``."""
        if self._closing or self.finished:
            return
        self._closing = True
        self._close_deadline = now + self.settings.close_timeout

    def destroy(self, now: float) -> None:
        """Send RESET and end at once: nothing buffered is sent, nothing is waited for."""
        if self.finished:
            return
        if self.state is not ConnectionState.SYN_SENT or self._in_flight:
            reset = self._packet(PacketType.RESET, self._seq_nr, b"", now)
            self._outbox.append(reset.encode())
        self._end(ConnectionState.RESET, "destroyed")

    # ---- input -----------------------------------------------------------------------------
    def receive(self, packet: Packet, now: float) -> None:
        if self.state is ConnectionState.CLOSED or self.state is ConnectionState.RESET:
            return
        if packet.type is PacketType.RESET:
            if self._only_fin_unacked():
                # The peer has all our data and has closed; it forgot the connection
                # before its ack of our FIN reached us. Nothing was lost: a clean end.
                self._end(ConnectionState.CLOSED, None)
            else:
                self._end(ConnectionState.RESET, "reset by peer")
            return
        if packet.type is PacketType.SYN:
            # Our answer was lost and the peer asks again.
            if seq_distance(packet.seq_nr, self._ack_nr) == 0:
                self._ack_due = True
            return
        if not self.established:
            self.established = True
            self._handshake_deadline = None
        if self.state is ConnectionState.SYN_SENT:
            answer = packet.type in (PacketType.STATE, PacketType.DATA)
            if not answer or not self._acks(packet.ack_nr):
                return
            self.state = ConnectionState.CONNECTED
            # A STATE carries the number the peer's first DATA will take (and a DATA is
            # that first one, if the STATE was lost).
            self._ack_nr = (packet.seq_nr - 1) & SEQ_MASK
        self._note_timestamps(packet, now)
        self._peer_window = packet.wnd_size
        self._handle_ack(packet, now)
        if packet.type in (PacketType.DATA, PacketType.FIN) and not self.finished:
            self._handle_data(packet)

    def on_timer(self, now: float) -> None:
        if self.finished:
            return
        if self._close_deadline is not None and now >= self._close_deadline:
            self._end(ConnectionState.CLOSED, None)
            return
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._end(ConnectionState.RESET, "handshake timed out")
            return
        if self._timeout_deadline is None or now < self._timeout_deadline:
            return
        if not self._in_flight:
            self._timeout_deadline = None
            return
        if self._only_fin_unacked():
            # Everything but our FIN is acknowledged and the peer has closed its side: its
            # ack of the FIN was lost, or it is gone. Nothing is left to deliver either way.
            self._end(ConnectionState.CLOSED, None)
            return
        self._timeouts_in_a_row += 1
        self.stats["timeouts"] += 1
        if self._timeouts_in_a_row > self.settings.max_retransmissions:
            self._end(ConnectionState.RESET, "the peer stopped answering")
            return
        # Everything in flight is presumed lost; start again from one packet.
        for packet in self._in_flight.values():
            if not packet.needs_resend:
                packet.needs_resend = True
                self._awaiting_resend += 1
                self._flight_bytes -= len(packet.payload)
        self.cwnd = self.settings.packet_size
        self._slow_start = False
        self._timeout = min(self._timeout * 2, 60.0)
        self._timeout_deadline = None  # re-armed by the resend

    def _only_fin_unacked(self) -> bool:
        """The peer's FIN is in, every byte of ours acknowledged, at most our FIN is not."""
        return self.eof and self.state is ConnectionState.FIN_SENT and len(self._in_flight) <= 1

    # ---- output ----------------------------------------------------------------------------
    def flush(self, now: float) -> list[bytes]:
        """The datagrams to send now: resends first, then new data as the windows allow,
        the FIN once everything is out, and an ACK if one is due and nothing carried it."""
        out, self._outbox = self._outbox, []
        if self.state is ConnectionState.RESET:
            return out
        if self.state is not ConnectionState.CLOSED:
            out += self._resend_lost(now)
        if self.state in (ConnectionState.SYN_SENT, ConnectionState.CLOSED):
            if self._ack_due and self.state is ConnectionState.CLOSED:
                out.append(self._packet(PacketType.STATE, self._seq_nr, b"", now).encode())
                self._ack_due = False
                self.unacked_arrivals = 0
            return out
        size = self.settings.packet_size
        while self._send_buffer and self._may_send(min(size, len(self._send_buffer))):
            payload = bytes(self._send_buffer[:size])
            del self._send_buffer[:size]
            out.append(self._new_packet(PacketType.DATA, payload, now))
        if (
            self._closing
            and self.state is ConnectionState.CONNECTED
            and not self._send_buffer
            and self._may_send(0)
        ):
            out.append(self._new_packet(PacketType.FIN, b"", now))
            self.state = ConnectionState.FIN_SENT
        if self._ack_due:
            out.append(self._packet(PacketType.STATE, self._seq_nr, b"", now).encode())
            self._ack_due = False
            self.unacked_arrivals = 0
        return out

    # ---- internals: sending ------------------------------------------------------------------
    def _window(self) -> int:
        return min(self.cwnd, self._peer_window)

    def _may_send(self, size: int) -> bool:
        # One packet may always be in flight: it probes a closed receive window.
        return self._flight_bytes == 0 or self._flight_bytes + size <= self._window()

    def _new_packet(self, packet_type: PacketType, payload: bytes, now: float) -> bytes:
        packet = _Outgoing(packet_type, self._seq_nr, payload)
        self._seq_nr = (self._seq_nr + 1) & SEQ_MASK
        self._in_flight[packet.seq_nr] = packet
        self._flight_bytes += len(payload)
        self._unacked_bytes += len(payload)
        return self._send(packet, now)

    def _resend_lost(self, now: float) -> list[bytes]:
        out = []
        for packet in self._in_flight.values():
            if not self._awaiting_resend:
                break
            if not packet.needs_resend:
                continue
            if not packet.urgent and not self._may_send(len(packet.payload)):
                break  # oldest first: none after this one fits either
            packet.needs_resend = packet.urgent = False
            self._awaiting_resend -= 1
            self._flight_bytes += len(packet.payload)
            out.append(self._send(packet, now))
        return out

    def _send(self, packet: _Outgoing, now: float) -> bytes:
        packet.sent_at = now
        packet.transmissions += 1
        self.stats["sent" if packet.transmissions == 1 else "resent"] += 1
        if self._timeout_deadline is None:
            self._timeout_deadline = now + self._timeout
        self._ack_due = False  # every packet carries our ack
        self.unacked_arrivals = 0
        return self._packet(packet.type, packet.seq_nr, packet.payload, now).encode()

    def _packet(self, packet_type: PacketType, seq_nr: int, payload: bytes, now: float) -> Packet:
        window = self._receive_window()
        self._advertised = window
        sack = None
        if self._out_of_order:
            sack = sack_mask(self._ack_nr, self._out_of_order, 32)
        return Packet(
            type=packet_type,
            connection_id=self.recv_id if packet_type is PacketType.SYN else self.send_id,
            seq_nr=seq_nr,
            ack_nr=self._ack_nr,
            wnd_size=window,
            timestamp=_micros(now),
            timestamp_difference=self._reply_micro,
            sack=sack,
            payload=payload,
        )

    def _receive_window(self) -> int:
        used = len(self._received) + self._out_of_order_bytes
        return max(0, self.settings.receive_buffer - used)

    # ---- internals: acknowledgements -----------------------------------------------------------
    def _acks(self, ack_nr: int) -> bool:
        """Whether ``ack_nr`` names a packet we sent and the peer has not yet acked."""
        if not self._in_flight:
            return False
        oldest = next(iter(self._in_flight))
        return 0 <= seq_distance(ack_nr, oldest) < seq_distance(self._seq_nr, oldest)

    def _note_timestamps(self, packet: Packet, now: float) -> None:
        if packet.timestamp:
            self._reply_micro = (_micros(now) - packet.timestamp) & _U32

    def _handle_ack(self, packet: Packet, now: float) -> None:
        if not self._in_flight:
            # Nothing of ours to acknowledge (the receiving side of an upload, every
            # datagram): only the last ack seen and a FIN's end matter.
            self._last_ack_seen = packet.ack_nr
            if self.state is ConnectionState.FIN_SENT:
                self.fin_acked = True
                if self.eof:
                    self._end(ConnectionState.CLOSED, None)
            return
        acked: list[_Outgoing] = []
        if self._acks(packet.ack_nr):
            while self._in_flight:
                seq = next(iter(self._in_flight))
                if seq_distance(seq, packet.ack_nr) > 0:
                    break
                acked.append(self._in_flight.pop(seq))
        if packet.sack is not None:
            for seq in sack_bits(packet.ack_nr, packet.sack):
                if seq in self._in_flight:
                    acked.append(self._in_flight.pop(seq))
        # The latest send among the packets acked now: a resent packet older than that is
        # lost again (it would otherwise wait for a timeout).
        newest = -1.0
        if acked:
            newest = max(outgoing.sent_at for outgoing in acked)
            self._on_acked(acked, packet, now)
        # Loss detection: three duplicate acks, or three packets past the hole SACKed.
        duplicate = packet.type is PacketType.STATE and packet.ack_nr == self._last_ack_seen
        if self._in_flight and not acked and duplicate:
            self._duplicate_acks += 1
        elif acked:
            self._duplicate_acks = 0
        self._last_ack_seen = packet.ack_nr
        if self._in_flight:
            if self._duplicate_acks >= _DUPLICATE_ACKS:
                self._duplicate_acks = 0
                self._declare_lost(next(iter(self._in_flight.values())), newest)
            if packet.sack is not None:
                self._sack_losses(packet.ack_nr, packet.sack, newest)
        if self.state is ConnectionState.FIN_SENT and not self._in_flight:
            self.fin_acked = True
            if self.eof:
                self._end(ConnectionState.CLOSED, None)

    def _on_acked(self, acked: list[_Outgoing], packet: Packet, now: float) -> None:
        bytes_acked = 0
        for outgoing in acked:
            if outgoing.needs_resend:
                self._awaiting_resend -= 1
            else:
                self._flight_bytes -= len(outgoing.payload)
            bytes_acked += len(outgoing.payload)
            self._unacked_bytes -= len(outgoing.payload)
            if outgoing.transmissions == 1:  # Karn: no samples from resent packets
                self._rtt_sample(now - outgoing.sent_at)
        self._timeouts_in_a_row = 0
        self._timeout_deadline = now + self._timeout if self._in_flight else None
        if packet.timestamp_difference:
            self._delays.add(packet.timestamp_difference, now)
        if bytes_acked:
            self._grow_window(bytes_acked)
        if self._recovery_until is not None and self._recovery_until not in self._in_flight:
            self._recovery_until = None

    def _rtt_sample(self, sample: float) -> None:
        if self._rtt == 0.0:
            self._rtt, self._rtt_var = sample, sample / 2
        else:
            delta = self._rtt - sample
            self._rtt_var += (abs(delta) - self._rtt_var) / 4
            self._rtt += (sample - self._rtt) / 8
        self._timeout = max(self._rtt + 4 * self._rtt_var, MIN_TIMEOUT)

    def _grow_window(self, bytes_acked: int) -> None:
        """LEDBAT: grow in proportion to how far the queuing delay is below the target,
        shrink in proportion to how far it is above; slow start until the first loss or
        until the delay reaches half the target."""
        delay = self._delays.queuing_delay
        if self._slow_start and delay < CCONTROL_TARGET_US // 2:
            self.cwnd += bytes_acked
        else:
            self._slow_start = False
            off_target = (CCONTROL_TARGET_US - delay) / CCONTROL_TARGET_US
            window_factor = min(bytes_acked, self.cwnd) / max(self.cwnd, bytes_acked)
            self.cwnd += int(MAX_CWND_INCREASE_PER_RTT * off_target * window_factor)
        self.cwnd = max(self.settings.packet_size, min(self.cwnd, self.settings.max_cwnd))

    def _sack_losses(self, ack_nr: int, mask: bytes, newest: float) -> None:
        """BEP 29: a packet is lost once three packets sent after it are acknowledged."""
        sacked = sorted(seq_distance(seq, ack_nr) for seq in sack_bits(ack_nr, mask))
        for packet in self._in_flight.values():
            distance = seq_distance(packet.seq_nr, ack_nr)
            if len(sacked) - bisect.bisect_right(sacked, distance) < _DUPLICATE_ACKS:
                break
            self._declare_lost(packet, newest)

    def _declare_lost(self, packet: _Outgoing, newest_acked_send: float) -> None:
        """Fast retransmit: resend at the next flush and halve the window once per window of
        data. A packet already resent is declared lost again only when a packet sent after
        its last send was acknowledged first."""
        if packet.needs_resend or packet.type is PacketType.SYN:
            return
        if packet.transmissions > 1 and packet.sent_at >= newest_acked_send:
            return
        packet.needs_resend = packet.urgent = True
        self._awaiting_resend += 1
        self.stats["fast_retransmits"] += 1
        self._flight_bytes -= len(packet.payload)
        if self._recovery_until is None:
            self.cwnd = max(self.settings.packet_size, self.cwnd // 2)
            self._slow_start = False
            self._recovery_until = (self._seq_nr - 1) & SEQ_MASK

    # ---- internals: receiving ------------------------------------------------------------------
    def _handle_data(self, packet: Packet) -> None:
        self._ack_due = True
        self.unacked_arrivals += 1
        ahead = seq_distance(packet.seq_nr, self._ack_nr)
        if ahead <= 0:
            return  # a duplicate: acked again, nothing else
        if packet.type is PacketType.FIN:
            self._peer_fin = packet.seq_nr
        if ahead > 1:
            fits = self._out_of_order_bytes + len(packet.payload) <= self.settings.receive_buffer
            if packet.seq_nr not in self._out_of_order and fits and ahead < 1024:
                self._out_of_order[packet.seq_nr] = packet.payload
                self._out_of_order_bytes += len(packet.payload)
            return
        if len(self._received) > 2 * self.settings.receive_buffer:
            return  # a peer ignoring our window: dropped unacknowledged
        self._deliver(packet.payload)
        while True:
            following = (self._ack_nr + 1) & SEQ_MASK
            payload = self._out_of_order.pop(following, None)
            if payload is None:
                break
            self._out_of_order_bytes -= len(payload)
            self._deliver(payload)

    def _deliver(self, payload: bytes) -> None:
        self._ack_nr = (self._ack_nr + 1) & SEQ_MASK
        self._received += payload
        if self._peer_fin is not None and self._ack_nr == self._peer_fin:
            self.eof = True
            self._out_of_order.clear()
            self._out_of_order_bytes = 0
            if self.fin_acked:
                self._end(ConnectionState.CLOSED, None)

    def _end(self, state: ConnectionState, error: str | None) -> None:
        self.state = state
        self.error = error
        self._timeout_deadline = self._close_deadline = self._handshake_deadline = None
        self._send_buffer.clear()
        self._in_flight.clear()
        self._flight_bytes = self._unacked_bytes = self._awaiting_resend = 0
