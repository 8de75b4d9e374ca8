"""The server side of one connection, as a pure state machine (no I/O).

Modes, and everything that moves between them, are in ``_TRANSITIONS``::

    IDLE --StreamRequest--> NEGOTIATING --accept W>0--> RAW --W bytes--> COMPLETING
      ^                        |  |                                          |
      |                        |  +--accept W=0-------------------------------+
      +------refuse------------+                                              |
      +----------------------------------completion packet sent-----------------+

    IDLE --PullRequest--> PULLING --accept T-O>0--> SENDING --T-O bytes sent--> IDLE
                            |  +--accept O=T, or refuse--> IDLE

A transport feeds bytes with ``receive_data`` and pulls events with ``next_event``; it answers
through ``respond``/``accept_stream``/``refuse_stream``/``complete``, which return the bytes
to write. In RAW mode the transport moves the bytes itself (straight into storage buffers)
and reports how many it took with ``raw_received``; the machine only counts them down. A pull
(§5) is the same in the other direction: after ``accept_pull`` the transport sends the
content's raw bytes itself and reports them with ``raw_sent``; input that arrives
meanwhile is kept and read once the content is sent.

Notification packets (PROTOCOL §8) may go out only between two of the server's own packets
and never while a stream is being negotiated, received or completed, nor while a pull is
being answered or its raw bytes sent: ``notify`` returns the packet at once in IDLE mode
and holds it otherwise; held packets ride along with the output that brings the connection
back to IDLE (a refusal, a completion, an empty pull) or, after a pull's last raw byte, are
taken with ``take_notifications``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, auto
from typing import Final

from .codec import Limits, PacketDecoder, PayloadLimit, encode_packet
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    ConnectionClosed,
    ContentSent,
    DataFormat,
    Event,
    InvalidRequest,
    PullRequest,
    Request,
    StreamRequest,
    WindowReceived,
    parse_request,
)
from .status import Status

__all__ = ["NEED_DATA", "PAUSED", "Mode", "ServerConnection", "notification_headers"]


class Mode(Enum):
    IDLE = auto()  # packet mode: requests are read and answered in order
    NEGOTIATING = auto()  # a stream request awaits the server's accept or refusal
    RAW = auto()  # exactly ``raw_remaining`` raw bytes are due
    COMPLETING = auto()  # the window is in; the completion packet is due
    PULLING = auto()  # a pull request awaits the server's accept or refusal
    SENDING = auto()  # the server sends ``send_remaining`` raw bytes of content
    CLOSED = auto()  # nothing more is read or sent
    ERROR = auto()  # framing broke; one error packet may still be sent, then close


class _Sentinel(Enum):
    NEED_DATA = auto()  # feed more bytes
    PAUSED = auto()  # the server owes an answer before more input is looked at


NEED_DATA: Final = _Sentinel.NEED_DATA
PAUSED: Final = _Sentinel.PAUSED


class _Input(Enum):
    REQUEST = auto()
    STREAM_REQUEST = auto()
    ACCEPT_WINDOW = auto()
    ACCEPT_EMPTY = auto()
    REFUSE = auto()
    WINDOW_FILLED = auto()
    COMPLETE = auto()
    FAIL = auto()
    ABORT = auto()
    PEER_CLOSED = auto()
    PROTOCOL_ERROR = auto()
    PULL_REQUEST = auto()
    ACCEPT_PULL = auto()
    ACCEPT_PULL_EMPTY = auto()
    REFUSE_PULL = auto()
    CONTENT_SENT = auto()
    SEND_FAILED = auto()


# Everything that changes a connection's mode is in this table; anything absent is a bug of
# the caller (LocalProtocolError) or of the peer (handled where input is parsed).
_TRANSITIONS: Final[dict[tuple[Mode, _Input], Mode]] = {
    (Mode.IDLE, _Input.REQUEST): Mode.IDLE,
    (Mode.IDLE, _Input.STREAM_REQUEST): Mode.NEGOTIATING,
    (Mode.NEGOTIATING, _Input.ACCEPT_WINDOW): Mode.RAW,
    (Mode.NEGOTIATING, _Input.ACCEPT_EMPTY): Mode.COMPLETING,
    (Mode.NEGOTIATING, _Input.REFUSE): Mode.IDLE,
    (Mode.RAW, _Input.WINDOW_FILLED): Mode.COMPLETING,
    (Mode.COMPLETING, _Input.COMPLETE): Mode.IDLE,
    # A failure while raw bytes are due is sent at once, then the connection closes (§3.3).
    (Mode.RAW, _Input.FAIL): Mode.CLOSED,
    (Mode.COMPLETING, _Input.FAIL): Mode.IDLE,
    (Mode.IDLE, _Input.PULL_REQUEST): Mode.PULLING,
    (Mode.PULLING, _Input.ACCEPT_PULL): Mode.SENDING,
    (Mode.PULLING, _Input.ACCEPT_PULL_EMPTY): Mode.IDLE,
    (Mode.PULLING, _Input.REFUSE_PULL): Mode.IDLE,
    (Mode.SENDING, _Input.CONTENT_SENT): Mode.IDLE,
    # Content that cannot be sent whole (storage failed, the stream vanished): the client
    # waits for raw bytes, so no packet can tell it; the connection ends (§5).
    (Mode.SENDING, _Input.SEND_FAILED): Mode.CLOSED,
    **{(mode, _Input.PEER_CLOSED): Mode.CLOSED for mode in Mode},
    **{(mode, _Input.ABORT): Mode.CLOSED for mode in Mode},
    **{(mode, _Input.PROTOCOL_ERROR): Mode.ERROR for mode in (Mode.IDLE, Mode.NEGOTIATING)},
}


def response_headers(
    status: Status,
    request_id: str | None,
    message: str | None = None,
    data_format: DataFormat | None = None,
    extra: Mapping[str, str | int] | None = None,
) -> dict[str, str | int]:
    headers: dict[str, str | int] = {"status": int(status)}
    if request_id is not None:
        headers["id"] = request_id
    if data_format is not None:
        headers["data-format"] = data_format.value
    if status != Status.OK:
        headers["message"] = message or status.phrase
    if extra:
        for name, value in extra.items():
            headers.setdefault(name, value)
    return headers


def notification_headers(
    kind: str, notification_id: str, sender: str | None = None
) -> dict[str, str | int]:
    """A notification packet's headers: no ``status`` (that tells it from a response)."""
    headers: dict[str, str | int] = {
        "notification": kind,
        "notification-id": notification_id,
        "data-format": DataFormat.JSON.value,
    }
    if sender is not None:
        headers["from"] = sender
    return headers


class ServerConnection:
    def __init__(
        self, limits: Limits | None = None, payload_limit: PayloadLimit | None = None
    ) -> None:
        self._decoder = PacketDecoder(limits or Limits(), payload_limit)
        self.mode = Mode.IDLE
        self.raw_remaining = 0
        self.send_remaining = 0
        self._window = 0
        self._content_size = 0
        self._pull: PullRequest | None = None
        self._eof = False
        self._stream: StreamRequest | None = None
        # Repeated on every call once closed, so a late caller sees the same cleanliness.
        self._closed = ConnectionClosed(True)
        self._held: list[bytes] = []  # notification packets waiting for IDLE mode

    # ---- state -------------------------------------------------------------------------
    def _move(self, event: _Input) -> None:
        try:
            self.mode = _TRANSITIONS[(self.mode, event)]
        except KeyError:
            raise LocalProtocolError(
                Status.SERVER_ERROR, f"{event.name} is not allowed in mode {self.mode.name}"
            ) from None

    @property
    def pending_input(self) -> int:
        """Bytes received in packet mode and not yet handed out as events."""
        return self._decoder.buffered

    @property
    def between_packets(self) -> bool:
        """True when no part of a packet waits in the input (a packet is not half in)."""
        return self._decoder.between_packets

    @property
    def notifications_held(self) -> int:
        """Notification packets waiting for the connection to be between packets again."""
        return len(self._held)

    @property
    def stream(self) -> StreamRequest | None:
        """The stream request being negotiated, received or completed, if any."""
        return self._stream

    @property
    def pull(self) -> PullRequest | None:
        """The pull request being answered or served, if any."""
        return self._pull

    # ---- input -------------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the peer; an empty ``data`` means the peer closed its side."""
        if not data:
            self._eof = True
        elif self.mode is Mode.RAW:
            raise LocalProtocolError(
                Status.SERVER_ERROR, "raw bytes are taken by the transport, not fed"
            )
        else:
            self._decoder.receive_data(data)

    def raw_received(self, count: int) -> WindowReceived | None:
        """Count ``count`` raw bytes that the transport stored; the last one ends the window."""
        if self.mode is not Mode.RAW or not 0 <= count <= self.raw_remaining:
            raise LocalProtocolError(Status.SERVER_ERROR, "raw byte count outside the window")
        self.raw_remaining -= count
        if self.raw_remaining:
            return None
        self._move(_Input.WINDOW_FILLED)
        return WindowReceived(self._window)

    def take_early_raw(self) -> bytes:
        """Bytes already read in packet mode that belong to the raw window (a client that
        did not wait for the accept reply). At most ``raw_remaining``; the caller passes them
        to storage and to ``raw_received``."""
        if self.mode is not Mode.RAW or not self._decoder.buffered:
            return b""
        data = self._decoder.take_buffered()
        early, rest = data[: self.raw_remaining], data[self.raw_remaining :]
        self._decoder.receive_data(rest)
        return early

    def next_event(self) -> Event | _Sentinel:
        """The next event, ``NEED_DATA``, or ``PAUSED`` while the server owes an answer.

        Raises ``RemoteProtocolError`` when framing breaks; the caller sends the error packet
        from ``abort`` and closes.
        """
        if self.mode is Mode.IDLE:
            try:
                packet = self._decoder.next_packet()
            except RemoteProtocolError:
                self._move(_Input.PROTOCOL_ERROR)
                raise
            if packet is not None:
                event = parse_request(packet)
                if isinstance(event, StreamRequest):
                    self._move(_Input.STREAM_REQUEST)
                    self._stream = event
                elif isinstance(event, PullRequest):
                    self._move(_Input.PULL_REQUEST)
                    self._pull = event
                else:
                    self._move(_Input.REQUEST)
                return event
            if self._eof:
                self._move(_Input.PEER_CLOSED)
                self._closed = ConnectionClosed(self._decoder.between_packets)
                return self._closed
            return NEED_DATA
        if self.mode is Mode.CLOSED:
            return self._closed
        if self._eof and self.mode is Mode.RAW:
            self._move(_Input.PEER_CLOSED)
            self._closed = ConnectionClosed(False)
            return self._closed
        if self.mode is Mode.RAW:
            return NEED_DATA
        return PAUSED

    # ---- output ------------------------------------------------------------------------
    def respond(
        self,
        request: Request | InvalidRequest,
        status: Status,
        *,
        payload: bytes = b"",
        data_format: DataFormat | None = None,
        message: str | None = None,
        headers: Mapping[str, str | int] | None = None,
    ) -> bytes:
        """The response to an ordinary request (or to an invalid one)."""
        if self.mode is not Mode.IDLE:
            raise LocalProtocolError(Status.SERVER_ERROR, f"cannot respond in {self.mode.name}")
        if isinstance(request, InvalidRequest) and request.is_stream:
            headers = {"x-stream": -1, **(headers or {})}
        return encode_packet(
            response_headers(status, request.id, message, data_format, headers), payload
        )

    def accept_stream(
        self,
        *,
        key: str,
        offset: int,
        window: int,
        buffer_size: int,
        headers: Mapping[str, str | int] | None = None,
    ) -> bytes:
        """Accept the stream under negotiation: ``window`` bytes are taken now, from
        ``offset``. ``window`` equal to what remains is announced as ``x-stream: 0:B2``."""
        stream = self._require_stream(Mode.NEGOTIATING)
        remaining = stream.total - offset
        # A zero window can only be announced when nothing remains: "x-stream: 0:B" means
        # "send all of it", so a grant of 0 out of R > 0 bytes has no wire form.
        if (
            not 0 <= offset <= stream.total
            or not 0 <= window <= remaining
            or (window == 0 and remaining > 0)
            or buffer_size < 1
        ):
            raise LocalProtocolError(
                Status.SERVER_ERROR, "offset, window or buffer size out of range"
            )
        capacity = 0 if window == remaining else window
        extra: dict[str, str | int] = {
            "x-stream": f"{capacity}:{buffer_size}",
            "x-stream-key": key,
            "x-stream-offset": offset,
            **(headers or {}),
        }
        self._move(_Input.ACCEPT_WINDOW if window else _Input.ACCEPT_EMPTY)
        self.raw_remaining = self._window = window
        return encode_packet(
            response_headers(Status.OK, stream.id, None, stream.data_format, extra)
        )

    def refuse_stream(self, status: Status, message: str | None = None) -> bytes:
        stream = self._require_stream(Mode.NEGOTIATING)
        if status == Status.OK:
            raise LocalProtocolError(Status.SERVER_ERROR, "a refusal needs an error status")
        self._move(_Input.REFUSE)
        self._stream = None
        refusal = encode_packet(
            response_headers(status, stream.id, message, None, {"x-stream": -1})
        )
        return refusal + self.take_notifications()

    def complete(
        self,
        *,
        key: str,
        missing: int,
        status: Status = Status.OK,
        message: str | None = None,
        payload: bytes = b"",
        data_format: DataFormat | None = None,
        headers: Mapping[str, str | int] | None = None,
    ) -> bytes:
        """The completion packet (§3.3): ``missing`` bytes of the stream have not arrived.

        Allowed once the window is in, or on failure at any point of a stream (while raw
        bytes are still due it ends the connection: the caller closes after writing it).
        """
        stream = self._stream
        if stream is None:
            raise LocalProtocolError(Status.SERVER_ERROR, "no stream to complete")
        if not 0 <= missing <= stream.total:
            raise LocalProtocolError(Status.SERVER_ERROR, "missing byte count out of range")
        self._move(_Input.COMPLETE if status == Status.OK else _Input.FAIL)
        self._stream = None
        extra: dict[str, str | int] = {
            "x-stream": f"{missing}:0",
            "x-stream-key": key,
            **(headers or {}),
        }
        packet = encode_packet(
            response_headers(status, stream.id, message, data_format, extra), payload
        )
        if self.mode is Mode.CLOSED:
            self._held.clear()
        return packet + self.take_notifications()

    def notify(
        self, kind: str, notification_id: str, payload: bytes, sender: str | None = None
    ) -> bytes:
        """A notification packet (§8): its bytes when they may be written now (IDLE mode),
        else ``b""`` and the packet is held until the connection is back in IDLE mode (and
        dropped once it is closed)."""
        if self.mode in (Mode.CLOSED, Mode.ERROR):
            return b""
        packet = encode_packet(notification_headers(kind, notification_id, sender), payload)
        if self.mode is Mode.IDLE:
            return packet
        self._held.append(packet)
        return b""

    def take_notifications(self) -> bytes:
        """Held notification packets, once they may be written (IDLE mode), else ``b""``."""
        if self.mode is not Mode.IDLE or not self._held:
            return b""
        data = b"".join(self._held)
        self._held.clear()
        return data

    def accept_pull(
        self,
        *,
        key: str,
        total: int,
        buffer_size: int,
        checksum: str | None = None,
        headers: Mapping[str, str | int] | None = None,
    ) -> bytes:
        """Accept the pull under way: ``total − offset`` raw bytes follow this reply
        (``x-stream: T:B2``, ``x-stream-offset`` the client's ``O``); ``checksum`` is the
        content's sha256 hex digest when it is known."""
        pull = self._require_pull()
        if not pull.offset <= total or buffer_size < 1:
            raise LocalProtocolError(Status.SERVER_ERROR, "offset beyond the content's total")
        extra: dict[str, str | int] = {
            "x-stream": f"{total}:{buffer_size}",
            "x-stream-key": key,
            "x-stream-offset": pull.offset,
        }
        if checksum is not None:
            extra["x-stream-checksum"] = f"sha256:{checksum}"
        extra.update(headers or {})
        size = total - pull.offset
        self._move(_Input.ACCEPT_PULL if size else _Input.ACCEPT_PULL_EMPTY)
        self.send_remaining = self._content_size = size
        if not size:
            self._pull = None
        reply = encode_packet(response_headers(Status.OK, pull.id, None, None, extra))
        return reply + self.take_notifications()

    def refuse_pull(self, status: Status, message: str | None = None) -> bytes:
        pull = self._require_pull()
        if status == Status.OK:
            raise LocalProtocolError(Status.SERVER_ERROR, "a refusal needs an error status")
        self._move(_Input.REFUSE_PULL)
        self._pull = None
        refusal = encode_packet(response_headers(status, pull.id, message, None, {"x-stream": -1}))
        return refusal + self.take_notifications()

    def raw_sent(self, count: int) -> ContentSent | None:
        """Count ``count`` raw bytes of content the transport sent; the last one ends it."""
        if self.mode is not Mode.SENDING or not 0 <= count <= self.send_remaining:
            raise LocalProtocolError(Status.SERVER_ERROR, "sent byte count outside the content")
        self.send_remaining -= count
        if self.send_remaining:
            return None
        self._move(_Input.CONTENT_SENT)
        self._pull = None
        return ContentSent(self._content_size)

    def fail_sending(self) -> None:
        """The content cannot be sent whole: the connection ends, with no packet (the
        client reads raw bytes now), and the client resumes from what it received."""
        self._move(_Input.SEND_FAILED)
        self._pull = None

    def abort(self, status: Status, message: str) -> bytes:
        """The last packet before the server closes: a framing error, a timeout, shutdown.
        While content is being sent nothing can be said (the client reads raw bytes): the
        connection just ends."""
        sending = self.mode is Mode.SENDING
        self._move(_Input.ABORT)
        self._held.clear()
        self._pull = None
        if sending:
            return b""
        return encode_packet(response_headers(status, None, message))

    def _require_pull(self) -> PullRequest:
        if self.mode is not Mode.PULLING or self._pull is None:
            raise LocalProtocolError(Status.SERVER_ERROR, "no pull being answered")
        return self._pull

    def _require_stream(self, mode: Mode) -> StreamRequest:
        if self.mode is not mode or self._stream is None:
            raise LocalProtocolError(Status.SERVER_ERROR, f"no stream in mode {mode.name}")
        return self._stream
