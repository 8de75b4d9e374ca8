"""Pulls (PROTOCOL §5) in the sans-IO core: parsing ``x-stream-pull``, the accept and
refusal replies, counting the raw bytes the server sends, and input that arrives while it
sends."""

from __future__ import annotations

import pytest

from xstream_server.protocol import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    ContentSent,
    InvalidRequest,
    LocalProtocolError,
    Mode,
    Packet,
    PullRequest,
    Request,
    ServerConnection,
    Status,
    encode_packet,
    parse_request,
    parse_x_stream_pull,
)

from .helpers import decode_all

KEY = "Zm9vYmFyYmF6cXV4"


def pull(headers: dict[str, str], payload: bytes = b"") -> object:
    return parse_request(Packet({"route": "/down", **headers}, payload))


def test_pull_request_is_parsed() -> None:
    event = pull({"x-stream-pull": "5:4096", "x-stream-key": KEY, "id": "1", "name": "x"})
    assert event == PullRequest("/down", "1", 5, 4096, KEY, {"name": "x"}, None)
    assert pull({"x-stream-pull": "0:1", "authorization": "Bearer t"}) == PullRequest(
        "/down", None, 0, 1, None, {}, "Bearer t"
    )


@pytest.mark.parametrize(
    ("headers", "payload", "message"),
    [
        ({"x-stream-pull": "5"}, b"", "O:B"),
        ({"x-stream-pull": "-1:4"}, b"", "O:B"),
        ({"x-stream-pull": "0:0"}, b"", "O:B"),
        ({"x-stream-pull": "a:b"}, b"", "O:B"),
        ({"x-stream-pull": "0:4", "x-stream": "4:4"}, b"", "cannot go together"),
        ({"x-stream-pull": "0:4", "x-stream-checksum": "sha256:" + "0" * 64}, b"", "server's"),
        ({"x-stream-pull": "0:4"}, b"payload", "empty payload"),
        ({"x-stream-pull": "0:4", "x-stream-key": "bad key!"}, b"", "x-stream-key"),
    ],
)
def test_malformed_pulls_are_refused_as_streams(
    headers: dict[str, str], payload: bytes, message: str
) -> None:
    event = pull(headers, payload)
    assert isinstance(event, InvalidRequest)
    assert event.status == Status.BAD_REQUEST
    assert event.is_stream  # its refusal carries x-stream: -1
    assert message in event.message


def test_parse_x_stream_pull() -> None:
    assert parse_x_stream_pull("0:1") == (0, 1)
    assert parse_x_stream_pull("123:456") == (123, 456)
    for bad in ("", ":", "1:", ":1", "1:0", "1:2:3", " 1:2", "1e3:4"):
        assert parse_x_stream_pull(bad) is None, bad


def mode_of(conn: ServerConnection) -> Mode:
    return conn.mode  # read through a call: mypy keeps no narrowing across calls


def pulling(offset: int = 0, extra: bytes = b"") -> tuple[ServerConnection, PullRequest]:
    conn = ServerConnection()
    headers = {"route": "/down", "id": "p", "x-stream-pull": f"{offset}:8", "x-stream-key": KEY}
    conn.receive_data(encode_packet(headers) + extra)
    event = conn.next_event()
    assert isinstance(event, PullRequest)
    assert conn.mode is Mode.PULLING
    assert conn.pull == event
    return conn, event


def test_accepted_pull_sends_total_minus_offset_then_packets_again() -> None:
    conn, _ = pulling(offset=3)
    reply = decode_all(conn.accept_pull(key=KEY, total=10, buffer_size=4, checksum="ab" * 32))
    assert reply[0].headers == {
        "status": "0",
        "id": "p",
        "x-stream": "10:4",
        "x-stream-key": KEY,
        "x-stream-offset": "3",
        "x-stream-checksum": "sha256:" + "ab" * 32,
    }
    assert conn.mode is Mode.SENDING
    assert conn.send_remaining == 7
    assert conn.raw_sent(4) is None
    assert conn.raw_sent(3) == ContentSent(7)
    assert mode_of(conn) is Mode.IDLE
    assert conn.pull is None
    assert conn.next_event() is NEED_DATA


def test_checksum_is_left_out_when_unknown() -> None:
    conn, _ = pulling()
    reply = decode_all(conn.accept_pull(key=KEY, total=10, buffer_size=4))
    assert "x-stream-checksum" not in reply[0].headers


def test_pull_of_everything_already_held_sends_nothing() -> None:
    conn, _ = pulling(offset=10)
    reply = decode_all(conn.accept_pull(key=KEY, total=10, buffer_size=4))
    assert reply[0].headers["x-stream-offset"] == "10"
    assert conn.mode is Mode.IDLE
    assert conn.send_remaining == 0


def test_offset_beyond_total_cannot_be_accepted() -> None:
    conn, _ = pulling(offset=11)
    with pytest.raises(LocalProtocolError):
        conn.accept_pull(key=KEY, total=10, buffer_size=4)
    assert conn.mode is Mode.PULLING
    reply = decode_all(conn.refuse_pull(Status.RANGE_NOT_SATISFIABLE, "offset past the end"))
    assert mode_of(conn) is Mode.IDLE
    assert reply[0].headers == {
        "status": "416",
        "id": "p",
        "message": "offset past the end",
        "x-stream": "-1",
    }


def test_refusal_needs_an_error_status() -> None:
    conn, _ = pulling()
    with pytest.raises(LocalProtocolError):
        conn.refuse_pull(Status.OK)


def test_sent_bytes_are_counted_within_the_content() -> None:
    conn, _ = pulling()
    conn.accept_pull(key=KEY, total=4, buffer_size=4)
    with pytest.raises(LocalProtocolError):
        conn.raw_sent(5)
    assert conn.send_remaining == 4


def test_requests_sent_during_the_content_are_read_after_it() -> None:
    """§5: a client that sends packets while raw bytes are due to it is read afterwards."""
    later = encode_packet({"route": "/echo", "id": "after"}, b"hi")
    conn, _ = pulling(extra=later[:5])
    conn.accept_pull(key=KEY, total=6, buffer_size=4)
    conn.receive_data(later[5:])
    conn.receive_data(b"")  # and then it closes its side
    assert conn.next_event() is PAUSED
    conn.raw_sent(6)
    event = conn.next_event()
    assert isinstance(event, Request)
    assert (event.id, event.payload) == ("after", b"hi")
    conn.respond(event, Status.OK)
    assert conn.next_event() == ConnectionClosed(True)


def test_failure_while_sending_ends_the_connection_without_a_packet() -> None:
    conn, _ = pulling()
    conn.accept_pull(key=KEY, total=10, buffer_size=4)
    conn.raw_sent(3)
    conn.fail_sending()
    assert conn.mode is Mode.CLOSED
    other, _ = pulling()
    other.accept_pull(key=KEY, total=10, buffer_size=4)
    assert other.abort(Status.UNAVAILABLE, "shutting down") == b""
    assert other.mode is Mode.CLOSED


def test_abort_outside_content_still_says_why() -> None:
    conn, _ = pulling()
    assert decode_all(conn.abort(Status.UNAVAILABLE, "bye"))[0].headers["status"] == "503"
