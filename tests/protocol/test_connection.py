"""The connection state machine (PROTOCOL §2, §3), driven with bytes only."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xstream_server.protocol import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    DataFormat,
    InvalidRequest,
    Limits,
    LocalProtocolError,
    Mode,
    Packet,
    PullRequest,
    RemoteProtocolError,
    Request,
    ServerConnection,
    Status,
    StreamRequest,
    WindowReceived,
    encode_packet,
    response_headers,
)
from xstream_server.protocol.codec import PREFIX
from xstream_server.protocol.connection import _TRANSITIONS, _Input

from .helpers import Driver, GrantPolicy, decode_all, header_values, split, window_received

TOTAL = 10  # size of the stream every mode fixture negotiates
KEY = "Zm9vYmFyYmF6cXV4"


def stream_packet(total: int = TOTAL, buffer_size: int = 8, key: str | None = None) -> bytes:
    headers = {"route": "/up", "id": "s", "x-stream": f"{total}:{buffer_size}"}
    if key is not None:
        headers["x-stream-key"] = key
    return encode_packet(headers)


def request_packet(request_id: str, payload: bytes = b"") -> bytes:
    return encode_packet({"route": "/echo", "id": request_id}, payload)


def mode_of(conn: ServerConnection) -> Mode:
    """The current mode, read through a call so that mypy does not keep an earlier narrowing
    of ``conn.mode`` across the calls that change it."""
    return conn.mode


def one_packet(data: bytes) -> Packet:
    packets = decode_all(data)
    assert len(packets) == 1
    return packets[0]


def headers_of(data: bytes) -> Mapping[str, str]:
    return one_packet(data).headers


# ---- connections in every mode ------------------------------------------------------------


def negotiating(total: int = TOTAL) -> ServerConnection:
    conn = ServerConnection()
    conn.receive_data(stream_packet(total))
    assert isinstance(conn.next_event(), StreamRequest)
    return conn


def raw(window: int = 4) -> ServerConnection:
    conn = negotiating()
    conn.accept_stream(key=KEY, offset=0, window=window, buffer_size=8)
    return conn


def completing() -> ServerConnection:
    conn = raw(4)
    assert conn.raw_received(4) == WindowReceived(4)
    return conn


def pull_packet(offset: int = 0, buffer_size: int = 8) -> bytes:
    return encode_packet(
        {
            "route": "/down",
            "id": "p",
            "x-stream-pull": f"{offset}:{buffer_size}",
            "x-stream-key": KEY,
        }
    )


def pulling(offset: int = 0) -> ServerConnection:
    conn = ServerConnection()
    conn.receive_data(pull_packet(offset))
    assert isinstance(conn.next_event(), PullRequest)
    return conn


def sending() -> ServerConnection:
    conn = pulling()
    conn.accept_pull(key=KEY, total=TOTAL, buffer_size=8)
    return conn


def closed() -> ServerConnection:
    conn = ServerConnection()
    conn.abort(Status.UNAVAILABLE, "shutting down")
    return conn


def errored() -> ServerConnection:
    conn = ServerConnection()
    conn.receive_data(PREFIX.pack(0, 0))
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    return conn


IN_MODE: dict[Mode, Callable[[], ServerConnection]] = {
    Mode.IDLE: ServerConnection,
    Mode.NEGOTIATING: negotiating,
    Mode.RAW: raw,
    Mode.COMPLETING: completing,
    Mode.PULLING: pulling,
    Mode.SENDING: sending,
    Mode.CLOSED: closed,
    Mode.ERROR: errored,
}


def test_every_mode_can_be_reached() -> None:
    assert set(IN_MODE) == set(Mode)
    for mode, build in IN_MODE.items():
        assert build().mode is mode


# ---- the transition table -----------------------------------------------------------------

# Inputs that are the server's own calls; the machine must refuse any that the table lacks.
LOCAL: dict[_Input, Callable[[ServerConnection], object]] = {
    _Input.ACCEPT_WINDOW: lambda c: c.accept_stream(key=KEY, offset=0, window=4, buffer_size=8),
    _Input.ACCEPT_EMPTY: lambda c: c.accept_stream(key=KEY, offset=TOTAL, window=0, buffer_size=8),
    _Input.REFUSE: lambda c: c.refuse_stream(Status.GONE),
    _Input.WINDOW_FILLED: lambda c: c.raw_received(c.raw_remaining),
    _Input.COMPLETE: lambda c: c.complete(key=KEY, missing=0),
    _Input.FAIL: lambda c: c.complete(key=KEY, missing=6, status=Status.INSUFFICIENT_STORAGE),
    _Input.ABORT: lambda c: c.abort(Status.UNAVAILABLE, "shutting down"),
    _Input.ACCEPT_PULL: lambda c: c.accept_pull(key=KEY, total=TOTAL, buffer_size=8),
    _Input.ACCEPT_PULL_EMPTY: lambda c: c.accept_pull(key=KEY, total=0, buffer_size=8),
    _Input.REFUSE_PULL: lambda c: c.refuse_pull(Status.NOT_FOUND),
    _Input.CONTENT_SENT: lambda c: c.raw_sent(c.send_remaining),
    _Input.SEND_FAILED: lambda c: c.fail_sending(),
}


def feed_request(conn: ServerConnection) -> object:
    conn.receive_data(request_packet("r"))
    return conn.next_event()


def feed_stream_request(conn: ServerConnection) -> object:
    conn.receive_data(stream_packet())
    return conn.next_event()


def feed_pull_request(conn: ServerConnection) -> object:
    conn.receive_data(pull_packet())
    return conn.next_event()


def feed_eof(conn: ServerConnection) -> object:
    conn.receive_data(b"")
    return conn.next_event()


def feed_garbage(conn: ServerConnection) -> object:
    conn.receive_data(PREFIX.pack(0, 0))
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    return None


# Inputs that come from the peer, and the table entries they can be driven through.
PEER: dict[_Input, Callable[[ServerConnection], object]] = {
    _Input.REQUEST: feed_request,
    _Input.STREAM_REQUEST: feed_stream_request,
    _Input.PULL_REQUEST: feed_pull_request,
    _Input.PEER_CLOSED: feed_eof,
    _Input.PROTOCOL_ERROR: feed_garbage,
}
PEER_CASES = [
    (Mode.IDLE, _Input.REQUEST),
    (Mode.IDLE, _Input.STREAM_REQUEST),
    (Mode.IDLE, _Input.PULL_REQUEST),
    (Mode.IDLE, _Input.PEER_CLOSED),
    (Mode.RAW, _Input.PEER_CLOSED),
    (Mode.CLOSED, _Input.PEER_CLOSED),
    (Mode.IDLE, _Input.PROTOCOL_ERROR),
]
# Table entries no input can reach: while the server owes an answer the machine does not look
# at the peer's bytes or EOF (it says PAUSED), so these only make the table total.
DORMANT = [
    (Mode.NEGOTIATING, _Input.PEER_CLOSED),
    (Mode.COMPLETING, _Input.PEER_CLOSED),
    (Mode.PULLING, _Input.PEER_CLOSED),
    (Mode.SENDING, _Input.PEER_CLOSED),
    (Mode.ERROR, _Input.PEER_CLOSED),
    (Mode.NEGOTIATING, _Input.PROTOCOL_ERROR),
]
LOCAL_CASES = [(mode, step) for mode in Mode for step in LOCAL]


def test_the_cases_cover_the_whole_table() -> None:
    local_in_table = {case for case in LOCAL_CASES if case in _TRANSITIONS}
    assert local_in_table | set(PEER_CASES) | set(DORMANT) == set(_TRANSITIONS)
    assert set(LOCAL) | set(PEER) == set(_Input)


@pytest.mark.parametrize(("mode", "step"), LOCAL_CASES, ids=lambda v: str(v.name))
def test_local_step(mode: Mode, step: _Input) -> None:
    conn = IN_MODE[mode]()
    target = _TRANSITIONS.get((mode, step))
    if target is None:
        with pytest.raises(LocalProtocolError) as info:
            LOCAL[step](conn)
        assert info.value.status == Status.SERVER_ERROR
        assert mode_of(conn) is mode
    else:
        LOCAL[step](conn)
        assert mode_of(conn) is target


@pytest.mark.parametrize(("mode", "step"), PEER_CASES, ids=lambda v: str(v.name))
def test_peer_step(mode: Mode, step: _Input) -> None:
    conn = IN_MODE[mode]()
    PEER[step](conn)
    assert mode_of(conn) is _TRANSITIONS[(mode, step)]


@pytest.mark.parametrize(
    "mode", [Mode.NEGOTIATING, Mode.COMPLETING, Mode.PULLING, Mode.SENDING, Mode.ERROR]
)
def test_peer_input_waits_while_an_answer_is_owed(mode: Mode) -> None:
    conn = IN_MODE[mode]()
    conn.receive_data(request_packet("later"))
    conn.receive_data(b"")
    assert conn.next_event() is PAUSED
    assert conn.next_event() is PAUSED
    assert mode_of(conn) is mode


@pytest.mark.parametrize("mode", [m for m in Mode if m is not Mode.IDLE])
def test_respond_only_in_idle(mode: Mode) -> None:
    conn = IN_MODE[mode]()
    with pytest.raises(LocalProtocolError):
        conn.respond(Request("/echo", None, DataFormat.BYTES, b""), Status.OK)
    assert mode_of(conn) is mode


def test_bytes_cannot_be_fed_in_raw_mode() -> None:
    conn = raw()
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x")
    assert conn.raw_remaining == 4


def test_closed_connection_keeps_saying_so() -> None:
    conn = closed()
    conn.receive_data(request_packet("ignored"))
    assert conn.next_event() == ConnectionClosed(True)
    assert conn.next_event() == ConnectionClosed(True)


# ---- ordinary requests --------------------------------------------------------------------


def test_request_and_response() -> None:
    conn = ServerConnection()
    conn.receive_data(request_packet("7", b"ping"))
    event = conn.next_event()
    assert event == Request("/echo", "7", DataFormat.BYTES, b"ping")
    assert conn.next_event() is NEED_DATA
    assert isinstance(event, Request)
    wire = conn.respond(event, Status.OK, payload=b"pong", data_format=DataFormat.TEXT)
    assert one_packet(wire) == Packet({"status": "0", "id": "7", "data-format": "text"}, b"pong")


def test_error_response_has_a_message() -> None:
    conn = ServerConnection()
    conn.receive_data(request_packet("x"))
    event = conn.next_event()
    assert isinstance(event, Request)
    assert headers_of(conn.respond(event, Status.NOT_FOUND)) == {
        "status": "404",
        "id": "x",
        "message": Status.NOT_FOUND.phrase,
    }
    assert headers_of(conn.respond(event, Status.UNAUTHORIZED, message="who are you")) == {
        "status": "401",
        "id": "x",
        "message": "who are you",
    }


def test_extra_headers_cannot_override_status_or_id() -> None:
    headers = response_headers(Status.OK, "a", extra={"status": 500, "id": "b", "name": "n"})
    assert headers == {"status": 0, "id": "a", "name": "n"}


def test_invalid_stream_request_is_answered_with_x_stream_minus_one() -> None:
    conn = ServerConnection()
    conn.receive_data(encode_packet({"route": "/up", "id": "q", "x-stream": "0:1"}))
    event = conn.next_event()
    assert isinstance(event, InvalidRequest)
    assert mode_of(conn) is Mode.IDLE
    headers = headers_of(conn.respond(event, event.status, message=event.message))
    assert headers["status"] == "400"
    assert headers["x-stream"] == "-1"
    assert headers["id"] == "q"


def test_pipelined_requests_come_out_in_order() -> None:
    conn = ServerConnection()
    conn.receive_data(b"".join(request_packet(str(i), bytes([i])) for i in range(5)))
    seen = []
    while isinstance(event := conn.next_event(), Request):
        seen.append((event.id, event.payload))
    assert seen == [(str(i), bytes([i])) for i in range(5)]


@settings(max_examples=100, deadline=None)
@given(request_id=header_values)
def test_any_received_id_can_be_echoed(request_id: str) -> None:
    conn = ServerConnection()
    conn.receive_data(encode_packet({"route": "/echo", "id": request_id}))
    event = conn.next_event()
    if isinstance(event, Request):
        assert headers_of(conn.respond(event, Status.OK))["id"] == request_id
    else:
        assert isinstance(event, InvalidRequest)  # longer than 64 characters
        assert "id" not in headers_of(conn.respond(event, event.status))


def test_route_payload_limit_applies_to_the_connection() -> None:
    conn = ServerConnection(payload_limit=lambda h: 2 if h.get("route") == "/tiny" else 100)
    conn.receive_data(encode_packet({"route": "/roomy"}, b"abc"))
    assert isinstance(conn.next_event(), Request)
    conn.receive_data(PREFIX.pack(12, 3) + b"route: /tiny")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.status == Status.TOO_LARGE
    assert mode_of(conn) is Mode.ERROR


# ---- framing errors -----------------------------------------------------------------------


def test_framing_error_then_abort() -> None:
    conn = ServerConnection(Limits(max_header_block=64))
    conn.receive_data(PREFIX.pack(65, 0))
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert mode_of(conn) is Mode.ERROR
    assert conn.next_event() is PAUSED
    error = info.value
    assert headers_of(conn.abort(error.status, error.message)) == {
        "status": "431",
        "message": error.message,
    }
    assert mode_of(conn) is Mode.CLOSED


# ---- stream negotiation -------------------------------------------------------------------


def test_paused_while_negotiating() -> None:
    conn = ServerConnection()
    conn.receive_data(stream_packet() + request_packet("after"))
    event = conn.next_event()
    assert isinstance(event, StreamRequest)
    assert conn.stream == event
    assert mode_of(conn) is Mode.NEGOTIATING
    assert conn.next_event() is PAUSED
    conn.receive_data(request_packet("more"))
    assert conn.next_event() is PAUSED


@pytest.mark.parametrize(
    ("offset", "window", "announced"),
    [
        (0, 10, "0:8"),  # everything now
        (0, 4, "4:8"),  # a partial grant
        (0, 9, "9:8"),
        (6, 4, "0:8"),  # a resume taking the rest
        (6, 1, "1:8"),
    ],
)
def test_accept(offset: int, window: int, announced: str) -> None:
    conn = negotiating()
    wire = conn.accept_stream(key=KEY, offset=offset, window=window, buffer_size=8)
    assert headers_of(wire) == {
        "status": "0",
        "id": "s",
        "data-format": "bytes",
        "x-stream": announced,
        "x-stream-key": KEY,
        "x-stream-offset": str(offset),
    }
    assert mode_of(conn) is Mode.RAW
    assert conn.raw_remaining == window


def test_accept_a_complete_stream_needs_no_raw_bytes() -> None:
    conn = negotiating()
    wire = conn.accept_stream(key=KEY, offset=TOTAL, window=0, buffer_size=2)
    assert headers_of(wire)["x-stream"] == "0:2"
    assert headers_of(wire)["x-stream-offset"] == str(TOTAL)
    assert mode_of(conn) is Mode.COMPLETING
    assert conn.next_event() is PAUSED
    completion = conn.complete(key=KEY, missing=0, headers={"x-stream-checksum": "sha256:ab"})
    assert headers_of(completion)["x-stream"] == "0:0"
    assert mode_of(conn) is Mode.IDLE


def test_accept_passes_extra_headers() -> None:
    conn = negotiating()
    wire = conn.accept_stream(key=KEY, offset=0, window=10, buffer_size=8, headers={"note": "hi"})
    assert headers_of(wire)["note"] == "hi"


@pytest.mark.parametrize(
    ("offset", "window", "buffer_size"),
    [
        (0, 11, 8),  # more than the stream holds
        (4, 7, 8),  # more than remains
        (0, 0, 8),  # "x-stream: 0:B" would mean all ten bytes
        (3, 0, 8),
        (-1, 4, 8),
        (11, 0, 8),
        (0, 4, 0),
        (0, -1, 8),
    ],
)
def test_accept_out_of_range(offset: int, window: int, buffer_size: int) -> None:
    conn = negotiating()
    with pytest.raises(LocalProtocolError):
        conn.accept_stream(key=KEY, offset=offset, window=window, buffer_size=buffer_size)
    assert mode_of(conn) is Mode.NEGOTIATING


def test_refuse() -> None:
    conn = negotiating()
    wire = conn.refuse_stream(Status.GONE, "no such key")
    assert headers_of(wire) == {
        "status": "410",
        "id": "s",
        "message": "no such key",
        "x-stream": "-1",
    }
    assert mode_of(conn) is Mode.IDLE
    assert conn.stream is None


def test_refuse_needs_an_error_status() -> None:
    conn = negotiating()
    with pytest.raises(LocalProtocolError):
        conn.refuse_stream(Status.OK)
    assert mode_of(conn) is Mode.NEGOTIATING


def test_refusal_returns_to_packet_mode() -> None:
    conn = ServerConnection()
    conn.receive_data(stream_packet() + request_packet("next"))
    assert isinstance(conn.next_event(), StreamRequest)
    conn.refuse_stream(Status.METHOD_NOT_ALLOWED)
    event = conn.next_event()
    assert isinstance(event, Request)
    assert event.id == "next"


# ---- raw bytes ----------------------------------------------------------------------------


def test_raw_received_counts_down_to_the_window() -> None:
    conn = raw(window=10)
    assert conn.next_event() is NEED_DATA
    assert conn.raw_received(3) is None
    assert conn.raw_received(0) is None
    assert conn.raw_remaining == 7
    assert conn.raw_received(6) is None
    assert conn.raw_received(1) == WindowReceived(10)
    assert conn.raw_remaining == 0
    assert mode_of(conn) is Mode.COMPLETING
    assert conn.next_event() is PAUSED


@pytest.mark.parametrize("count", [5, -1])
def test_raw_received_out_of_range(count: int) -> None:
    conn = raw(window=4)
    with pytest.raises(LocalProtocolError):
        conn.raw_received(count)
    assert conn.raw_remaining == 4
    assert mode_of(conn) is Mode.RAW


def test_take_early_raw_splits_the_window_from_what_follows() -> None:
    conn = ServerConnection()
    conn.receive_data(stream_packet() + b"0123456" + request_packet("next"))
    assert isinstance(conn.next_event(), StreamRequest)
    assert conn.take_early_raw() == b""  # still negotiating: nothing belongs to a window
    conn.accept_stream(key=KEY, offset=3, window=7, buffer_size=8)
    assert conn.take_early_raw() == b"0123456"
    assert conn.raw_remaining == 7  # counted only through raw_received
    assert conn.raw_received(7) == WindowReceived(7)
    conn.complete(key=KEY, missing=0)
    event = conn.next_event()
    assert isinstance(event, Request)
    assert event.id == "next"


def test_take_early_raw_with_part_of_the_window() -> None:
    conn = ServerConnection()
    conn.receive_data(stream_packet() + b"012")
    assert isinstance(conn.next_event(), StreamRequest)
    conn.accept_stream(key=KEY, offset=0, window=10, buffer_size=8)
    assert conn.take_early_raw() == b"012"
    assert conn.take_early_raw() == b""
    assert conn.raw_received(3) is None
    assert conn.raw_remaining == 7


def test_take_early_raw_outside_raw_mode() -> None:
    conn = ServerConnection()
    conn.receive_data(b"\x00\x00")
    assert conn.take_early_raw() == b""
    assert conn.next_event() is NEED_DATA


# ---- completion ---------------------------------------------------------------------------


def test_completion_with_a_result() -> None:
    conn = completing()
    wire = conn.complete(
        key=KEY,
        missing=0,
        payload=b'{"ok": true}',
        data_format=DataFormat.JSON,
        headers={"x-stream-checksum": "sha256:" + "a" * 64},
    )
    assert one_packet(wire) == Packet(
        {
            "status": "0",
            "id": "s",
            "data-format": "json",
            "x-stream": "0:0",
            "x-stream-key": KEY,
            "x-stream-checksum": "sha256:" + "a" * 64,
        },
        b'{"ok": true}',
    )
    assert mode_of(conn) is Mode.IDLE
    assert conn.stream is None


def test_completion_of_a_partial_window() -> None:
    conn = completing()
    assert headers_of(conn.complete(key=KEY, missing=6))["x-stream"] == "6:0"


def test_failure_after_the_window_keeps_the_connection() -> None:
    conn = completing()
    wire = conn.complete(key=KEY, missing=10, status=Status.CHECKSUM_MISMATCH)
    assert headers_of(wire) == {
        "status": "460",
        "id": "s",
        "message": Status.CHECKSUM_MISMATCH.phrase,
        "x-stream": "10:0",
        "x-stream-key": KEY,
    }
    assert mode_of(conn) is Mode.IDLE


def test_failure_while_raw_bytes_are_due_closes() -> None:
    conn = raw(window=4)
    conn.raw_received(1)
    wire = conn.complete(key=KEY, missing=8, status=Status.INSUFFICIENT_STORAGE, message="disk")
    assert headers_of(wire)["status"] == "507"
    assert headers_of(wire)["x-stream"] == "8:0"
    assert mode_of(conn) is Mode.CLOSED


@pytest.mark.parametrize("missing", [-1, TOTAL + 1])
def test_completion_missing_out_of_range(missing: int) -> None:
    conn = completing()
    with pytest.raises(LocalProtocolError):
        conn.complete(key=KEY, missing=missing)
    assert mode_of(conn) is Mode.COMPLETING


# ---- end of input -------------------------------------------------------------------------


def test_eof_between_packets_is_clean() -> None:
    conn = ServerConnection()
    conn.receive_data(request_packet("a"))
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), Request)  # what arrived before EOF still counts
    assert conn.next_event() == ConnectionClosed(True)
    assert mode_of(conn) is Mode.CLOSED


@pytest.mark.parametrize(
    "cut",
    [1, 7, 8, 12, 8 + len(b"route: /echo\nid: a"), 8 + len(b"route: /echo\nid: a") + 1],
)
def test_eof_inside_a_packet_is_unclean(cut: int) -> None:
    conn = ServerConnection()
    conn.receive_data(request_packet("a", b"xy")[:cut])
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(False)
    assert conn.next_event() == ConnectionClosed(False)


def test_eof_in_raw_mode_is_unclean() -> None:
    conn = raw(window=4)
    conn.raw_received(2)
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(False)
    assert mode_of(conn) is Mode.CLOSED
    assert conn.next_event() == ConnectionClosed(False)


def test_eof_while_negotiating_waits_for_the_answer() -> None:
    conn = negotiating()
    conn.receive_data(b"")
    assert conn.next_event() is PAUSED
    conn.refuse_stream(Status.TOO_LARGE)
    assert conn.next_event() == ConnectionClosed(True)


def test_eof_while_negotiating_then_accept() -> None:
    conn = negotiating()
    conn.receive_data(b"")
    conn.accept_stream(key=KEY, offset=0, window=TOTAL, buffer_size=8)
    assert conn.next_event() == ConnectionClosed(False)


# ---- whole conversations ------------------------------------------------------------------


def test_upload_with_a_partial_grant_then_resume() -> None:
    data = bytes(range(TOTAL))
    first = Driver(policy=GrantPolicy(window_cap=4))
    first.feed_all([stream_packet(), data[:4]])
    accept, done = decode_all(bytes(first.output))
    assert (accept.headers["x-stream"], accept.headers["x-stream-offset"]) == ("4:8", "0")
    assert done.headers["x-stream"] == "6:0"
    assert bytes(first.raw) == data[:4]
    assert first.closed == ConnectionClosed(True)

    second = Driver(policy=GrantPolicy(offset=4))
    second.feed_all([stream_packet(key=KEY) + data[4:]])
    accept, done = decode_all(bytes(second.output))
    assert (accept.headers["x-stream"], accept.headers["x-stream-offset"]) == ("0:8", "4")
    assert done.headers["x-stream"] == "0:0"
    assert bytes(second.raw) == data[4:]
    assert window_received(second.events) == [WindowReceived(6)]


CAP = 16  # the most the server grants per window in these conversations

Item = tuple[str, bytes, int]  # ("request", payload, 0) or ("stream", window bytes, total)

items = st.one_of(
    st.tuples(st.just("request"), st.binary(max_size=20), st.just(0)),
    st.integers(1, 60).flatmap(
        lambda total: st.tuples(
            st.just("stream"),
            st.binary(min_size=min(total, CAP), max_size=min(total, CAP)),
            st.just(total),
        )
    ),
)


def conversation(script: list[Item]) -> bytes:
    """What a client sends: requests, and stream requests each followed by exactly the raw
    bytes of the window the server is going to grant (at most ``CAP``)."""
    out = []
    for i, (kind, body, total) in enumerate(script):
        if kind == "request":
            out.append(request_packet(str(i), body))
        else:
            out.append(stream_packet(total) + body)
    return b"".join(out)


def run(chunks: list[bytes]) -> Driver:
    driver = Driver(policy=GrantPolicy(window_cap=CAP))
    driver.feed_all(chunks)
    return driver


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(items, max_size=6), data=st.data())
def test_conversations_do_not_depend_on_how_bytes_are_cut(
    script: list[Item], data: st.DataObject
) -> None:
    wire = conversation(script)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20), label="cuts")

    whole = run([wire])
    bytewise = run([wire[i : i + 1] for i in range(len(wire))])
    pieces = run(split(wire, cuts))

    for driver in (whole, bytewise, pieces):
        assert driver.events == whole.events
        assert driver.raw == whole.raw
        assert driver.output == whole.output
        assert driver.closed == ConnectionClosed(True)

    # Requests and stream windows come out in the order they were sent.
    expected_raw = b"".join(body for kind, body, _ in script if kind == "stream")
    assert bytes(whole.raw) == expected_raw
    kinds = [
        "request" if isinstance(e, Request) else "stream"
        for e in whole.events
        if isinstance(e, Request | StreamRequest)
    ]
    assert kinds == [kind for kind, _, _ in script]
    responses = decode_all(bytes(whole.output))
    echoed = [p.payload for p in responses if "x-stream" not in p.headers]
    assert echoed == [body for kind, body, _ in script if kind == "request"]


# ---- fuzzing ------------------------------------------------------------------------------

FUZZ_LIMITS = Limits(max_header_block=200, max_headers=6, max_payload=50)


def fuzz(chunks: list[bytes]) -> None:
    """Arbitrary input either yields events or raises RemoteProtocolError; after an error
    the connection can still say why and close."""
    driver = Driver(ServerConnection(FUZZ_LIMITS), GrantPolicy(window_cap=7))
    failure: RemoteProtocolError | None = None
    try:
        driver.feed_all(chunks)
    except RemoteProtocolError as error:
        failure = error
    if failure is None:
        assert isinstance(driver.closed, ConnectionClosed)
    else:
        assert mode_of(driver.connection) is Mode.ERROR
        assert failure.status in {Status.BAD_REQUEST, Status.TOO_LARGE, Status.HEADERS_TOO_LARGE}
        one_packet(driver.connection.abort(failure.status, failure.message))
        assert mode_of(driver.connection) is Mode.CLOSED
    decode_all(bytes(driver.output))  # whatever was answered is well framed


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8))
def test_fuzz_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    fuzz(split(data, cuts))


@settings(max_examples=300, deadline=None)
@given(
    script=st.lists(items, min_size=1, max_size=4),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=3)), max_size=4),
    cuts=st.lists(st.integers(0, 1000), max_size=8),
)
def test_fuzz_mutated_conversations(
    script: list[Item], edits: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    # Start from valid input and damage it a little: it reaches much deeper than noise.
    wire = bytearray(conversation(script))
    for position, replacement in edits:
        at = position % (len(wire) + 1)
        wire[at : at + len(replacement) // 2 + 1] = replacement
    fuzz(split(bytes(wire), cuts))
