"""Notification packets in the connection state machine (PROTOCOL §8): they go out only
between two of the server's own packets, never inside a negotiation, a raw window or before
a completion packet. Bytes only, no sockets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xstream_server.protocol import (
    Mode,
    ServerConnection,
    Status,
    StreamRequest,
    WindowReceived,
    encode_packet,
)

from .helpers import decode_all
from .test_connection import IN_MODE, KEY, completing, negotiating, raw, request_packet
from .test_pull import pulling

PAYLOAD = json.dumps({"key": "k"}).encode()


def note(conn: ServerConnection, number: int) -> bytes:
    return conn.notify("stream-offer", f"1-{number}", PAYLOAD, sender="@alice")


def test_in_idle_a_notification_is_written_at_once() -> None:
    conn = ServerConnection()
    [packet] = decode_all(note(conn, 1))
    assert "status" not in packet.headers  # how a client tells it from a response
    assert packet.headers["notification"] == "stream-offer"
    assert packet.headers["notification-id"] == "1-1"
    assert packet.headers["from"] == "@alice"
    assert packet.headers["data-format"] == "json"
    assert json.loads(packet.payload) == {"key": "k"}
    assert conn.notifications_held == 0


def test_a_notification_without_sender_has_no_from_header() -> None:
    [packet] = decode_all(ServerConnection().notify("stream-delivered", "2-0", b"{}"))
    assert "from" not in packet.headers


@pytest.mark.parametrize("mode", [Mode.NEGOTIATING, Mode.RAW, Mode.COMPLETING])
def test_held_while_a_stream_is_under_way(mode: Mode) -> None:
    conn = IN_MODE[mode]()
    assert note(conn, 1) == b""
    assert conn.notifications_held == 1
    assert conn.take_notifications() == b""  # still not between packets


@pytest.mark.parametrize("mode", [Mode.CLOSED, Mode.ERROR])
def test_dropped_once_closed(mode: Mode) -> None:
    conn = IN_MODE[mode]()
    assert note(conn, 1) == b""
    assert conn.notifications_held == 0


def test_held_ones_follow_the_completion_packet() -> None:
    conn = raw(4)
    assert note(conn, 1) == b""
    assert note(conn, 2) == b""
    assert conn.raw_received(4) == WindowReceived(4)
    packets = decode_all(conn.complete(key=KEY, missing=6))
    assert [p.headers.get("status") for p in packets] == ["0", None, None]
    assert [p.headers.get("notification-id") for p in packets[1:]] == ["1-1", "1-2"]
    assert conn.mode is Mode.IDLE and conn.notifications_held == 0


def test_held_ones_follow_a_refusal() -> None:
    conn = negotiating()
    note(conn, 1)
    packets = decode_all(conn.refuse_stream(Status.FORBIDDEN, "no"))
    assert packets[0].headers["status"] == "403"
    assert packets[1].headers["notification-id"] == "1-1"


def test_held_ones_follow_an_empty_window_completion() -> None:
    conn = negotiating()
    conn.accept_stream(key=KEY, offset=10, window=0, buffer_size=8)
    note(conn, 1)
    packets = decode_all(conn.complete(key=KEY, missing=0))
    assert packets[1].headers["notification"] == "stream-offer"


def test_a_failure_inside_the_window_drops_them_with_the_connection() -> None:
    conn = raw(4)
    note(conn, 1)
    packets = decode_all(conn.complete(key=KEY, missing=10, status=Status.TIMEOUT))
    assert len(packets) == 1 and conn.mode is Mode.CLOSED


def test_completing_stays_free_of_notifications() -> None:
    conn = completing()
    note(conn, 1)
    assert conn.take_notifications() == b""
    out = conn.complete(key=KEY, missing=6)
    assert len(decode_all(out)) == 2


@given(
    window=st.integers(1, 64),
    pieces=st.lists(st.integers(1, 16), max_size=20),
    notes_at=st.sets(st.integers(0, 24), max_size=8),
)
def test_never_inside_a_raw_window(window: int, pieces: list[int], notes_at: set[int]) -> None:
    """Whatever moment notifications arrive at, the server's output decodes as whole
    packets in which nothing but the accept reply precedes the window and the completion
    packet comes before any notification held during it."""
    conn = ServerConnection()
    conn.receive_data(
        encode_packet({"route": "/up", "id": "s", "x-stream": f"{window}:8"})
        + request_packet("after")
    )
    out = [note(conn, 0)]  # idle: written at once
    assert isinstance(conn.next_event(), StreamRequest)
    out.append(note(conn, 1))  # negotiating: held
    accept = conn.accept_stream(key=KEY, offset=0, window=window, buffer_size=8)
    out.append(accept)
    step = 2
    remaining = window
    for size in [*pieces, window]:
        if not remaining:
            break
        if step in notes_at:
            assert note(conn, step) == b""
        step += 1
        taken = min(size, remaining)
        conn.raw_received(taken)
        remaining -= taken
    # In the raw window the wire carries only raw bytes: nothing was written meanwhile.
    out.append(conn.complete(key=KEY, missing=0))
    packets = decode_all(b"".join(out))
    kinds = ["notification" if "notification" in p.headers else "response" for p in packets]
    assert kinds[0] == "notification"
    assert kinds[1] == "response"  # the accept reply
    assert packets[1].headers["x-stream-key"] == KEY
    assert kinds[2] == "response"  # the completion packet, right after the window
    assert packets[2].headers["x-stream"] == "0:0"
    assert set(kinds[3:]) <= {"notification"}
    ids = [p.headers["notification-id"] for p in packets if "notification" in p.headers]
    assert ids == sorted(ids, key=lambda i: int(i.split("-")[1]))
    assert conn.notifications_held == 0


def test_held_through_a_pull_and_its_raw_bytes() -> None:
    """While a pull is answered and its content sent, the client reads raw bytes: a
    notification waits until the last of them is counted."""
    conn, _ = pulling()
    assert note(conn, 1) == b""  # PULLING
    accept = conn.accept_pull(key=KEY, total=10, buffer_size=4)
    assert len(decode_all(accept)) == 1  # the accept reply alone: raw bytes follow
    assert note(conn, 2) == b""  # SENDING
    conn.raw_sent(6)
    assert conn.take_notifications() == b""
    conn.raw_sent(4)
    packets = decode_all(conn.take_notifications())
    assert [p.headers["notification-id"] for p in packets] == ["1-1", "1-2"]


def test_held_ones_follow_a_pull_refusal_or_an_empty_pull() -> None:
    conn, _ = pulling()
    note(conn, 1)
    refused = decode_all(conn.refuse_pull(Status.NOT_FOUND, "no"))
    assert [p.headers.get("status") for p in refused] == ["404", None]
    conn, _ = pulling(offset=10)
    note(conn, 2)
    empty = decode_all(conn.accept_pull(key=KEY, total=10, buffer_size=4))
    assert [p.headers.get("notification-id") for p in empty] == [None, "1-2"]
