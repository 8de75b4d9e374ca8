"""Packet framing (PROTOCOL §1): encoding, incremental decoding, validation and limits."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xstream_server.protocol import (
    Limits,
    Packet,
    PacketDecoder,
    ProtocolError,
    RemoteProtocolError,
    Status,
    encode_packet,
    parse_header_block,
)
from xstream_server.protocol.codec import PREFIX, encode_header_block

from .helpers import header_maps, header_names, header_values, split

MAX = Limits().max_headers


def frame(block: bytes, payload: bytes = b"", *, payload_len: int | None = None) -> bytes:
    """A packet built by hand, so that malformed header blocks can be framed too."""
    declared = len(payload) if payload_len is None else payload_len
    return PREFIX.pack(len(block), declared) + block + payload


def decode(chunks: list[bytes], decoder: PacketDecoder | None = None) -> list[Packet]:
    decoder = decoder or PacketDecoder()
    packets = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        while (packet := decoder.next_packet()) is not None:
            packets.append(packet)
    return packets


def bad(block: bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        parse_header_block(block, MAX)
    return info.value


# ---- encoding -----------------------------------------------------------------------------


def test_encode_layout() -> None:
    wire = encode_packet({"route": "/echo", "id": 7}, b"hi")
    block = b"route: /echo\nid: 7"
    assert wire == b"\x00\x00\x00\x12\x00\x00\x00\x02" + block + b"hi"
    assert len(block) == 0x12


def test_encode_empty_payload_declares_zero() -> None:
    wire = encode_packet({"status": 0})
    assert wire[:8] == PREFIX.pack(9, 0)
    assert wire[8:] == b"status: 0"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Route", "/x"),  # a sender writes lower case
        ("", "x"),
        ("a b", "x"),
        ("a" * 65, "x"),
        ("x", "line\nbreak"),
        ("x", "nul\x00"),
        ("x", "c1\x85"),
        ("x", " leading"),
        ("x", "trailing\t"),
    ],
)
def test_encode_refuses_what_cannot_be_sent(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="cannot be sent"):
        encode_header_block({name: value})


def test_encode_keeps_unicode_spaces_that_are_not_blanks() -> None:
    # Only space and tab are trimmed by a receiver, so other spaces survive the trip.
    value = "\u2003spaced\u00a0"
    wire = encode_packet({"id": value})
    assert decode([wire]) == [Packet({"id": value})]


# ---- round trips --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    packets=st.lists(st.tuples(header_maps, st.binary(max_size=300)), min_size=1, max_size=4),
    data=st.data(),
)
def test_round_trip_whole_bytewise_and_split(
    packets: list[tuple[dict[str, str], bytes]], data: st.DataObject
) -> None:
    expected = [Packet(headers, payload) for headers, payload in packets]
    wire = b"".join(encode_packet(headers, payload) for headers, payload in packets)

    whole = decode([wire])
    bytewise = decode([wire[i : i + 1] for i in range(len(wire))])
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12), label="cuts")
    pieces = decode(split(wire, cuts))

    assert whole == expected
    assert bytewise == expected
    assert pieces == expected
    assert [p.wire_size for p in whole] == [len(encode_packet(h, b)) for h, b in packets]


@settings(max_examples=100, deadline=None)
@given(headers=header_maps)
def test_header_block_round_trip(headers: dict[str, str]) -> None:
    assert parse_header_block(encode_header_block(headers), MAX) == headers


@settings(max_examples=100, deadline=None)
@given(name=header_names, value=header_values, pad=st.sampled_from(["", " ", "\t", " \t "]))
def test_blanks_around_values_are_trimmed(name: str, value: str, pad: str) -> None:
    block = f"{name}:{pad}{value}{pad}".encode()
    assert parse_header_block(block, MAX) == {name: value}


def test_need_data_until_the_last_byte() -> None:
    wire = encode_packet({"route": "/a"}, b"payload")
    decoder = PacketDecoder()
    for i in range(len(wire) - 1):
        decoder.receive_data(wire[i : i + 1])
        assert decoder.next_packet() is None
        assert not decoder.between_packets
    decoder.receive_data(wire[-1:])
    assert decoder.next_packet() == Packet({"route": "/a"}, b"payload")
    assert decoder.between_packets
    assert decoder.next_packet() is None


def test_take_buffered_hands_over_unparsed_bytes() -> None:
    decoder = PacketDecoder()
    decoder.receive_data(encode_packet({"a": "1"}) + b"raw tail")
    assert decoder.next_packet() == Packet({"a": "1"})
    assert decoder.buffered == len(b"raw tail")
    assert decoder.take_buffered() == b"raw tail"
    assert decoder.buffered == 0
    assert decoder.between_packets


# ---- header block: accepted forms (§1) ----------------------------------------------------


def test_crlf_is_accepted_as_lf() -> None:
    assert parse_header_block(b"route: /a\r\nid: 1\r\n", MAX) == {"route": "/a", "id": "1"}


def test_one_trailing_newline_is_allowed() -> None:
    assert parse_header_block(b"route: /a\nid: 1\n", MAX) == {"route": "/a", "id": "1"}


def test_a_second_trailing_newline_is_an_empty_line() -> None:
    assert bad(b"route: /a\n\n").status == Status.BAD_REQUEST


def test_uppercase_names_are_lower_cased() -> None:
    assert parse_header_block(b"Route: /a\nX-STREAM: 1:1", MAX) == {
        "route": "/a",
        "x-stream": "1:1",
    }


def test_values_keep_colons_and_unicode() -> None:
    block = "route: /a:b\nname: Grüße: 日本".encode()
    assert parse_header_block(block, MAX) == {"route": "/a:b", "name": "Grüße: 日本"}


def test_empty_value_is_allowed() -> None:
    assert parse_header_block(b"name:", MAX) == {"name": ""}
    assert parse_header_block(b"name:   ", MAX) == {"name": ""}


def test_longest_name() -> None:
    name = "n" * 64
    assert parse_header_block(f"{name}: v".encode(), MAX) == {name: "v"}


def test_a_block_of_one_newline_has_no_headers() -> None:
    # Framing is sound; the missing route is the request layer's business (events.py).
    assert parse_header_block(b"\n", MAX) == {}


# ---- header block: refused forms (§1) -----------------------------------------------------


def test_bad_utf8() -> None:
    error = bad(b"route: /\xff\xfe")
    assert error.status == Status.BAD_REQUEST
    assert "UTF-8" in error.message


@pytest.mark.parametrize("line", [b"route /a", b"route", b"", b" "])
def test_line_without_colon(line: bytes) -> None:
    assert bad(b"id: 1\n" + line + b"\nx: y").status == Status.BAD_REQUEST


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a b",
        "a_b",
        "a.b",
        "a/b",
        "é",
        "n" * 65,
        "\u212a",  # KELVIN SIGN: lower-cases to an ASCII "k" but is not one
        "\x1croute",  # a control character that str.strip() would have removed
        "\x85route",
        "\u3000route",
    ],
)
def test_invalid_names(name: str) -> None:
    error = bad(f"{name}: v".encode())
    assert error.status == Status.BAD_REQUEST


def test_blanks_around_a_name_are_trimmed() -> None:
    assert parse_header_block(b" route\t: /a", MAX) == {"route": "/a"}


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\x9f", "\r", "\x0b"])
def test_control_characters_in_values(char: str) -> None:
    error = bad(f"name: a{char}b".encode())
    assert error.status == Status.BAD_REQUEST
    assert "control" in error.message


@pytest.mark.parametrize("second", [b"route", b"ROUTE", b"Route"])
def test_duplicate_names(second: bytes) -> None:
    error = bad(b"route: /a\n" + second + b": /b")
    assert error.status == Status.BAD_REQUEST
    assert "twice" in error.message


def test_header_count_limit() -> None:
    lines = [f"h{i}: v" for i in range(MAX)]
    assert len(parse_header_block("\n".join(lines).encode(), MAX)) == MAX
    too_many = "\n".join([*lines, "one-more: v"]).encode()
    assert bad(too_many).status == Status.HEADERS_TOO_LARGE


def test_header_count_limit_is_configurable() -> None:
    decoder = PacketDecoder(Limits(max_headers=2))
    decoder.receive_data(frame(b"a: 1\nb: 2\nc: 3"))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_packet()
    assert info.value.status == Status.HEADERS_TOO_LARGE


# ---- declared lengths are checked before the bytes arrive --------------------------------


def test_empty_header_block_is_refused_after_the_prefix() -> None:
    decoder = PacketDecoder()
    decoder.receive_data(PREFIX.pack(0, 5))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_packet()
    assert info.value.status == Status.BAD_REQUEST


@pytest.mark.parametrize("limit", [16 * 1024, 100])
def test_header_block_limit_is_checked_on_the_prefix_alone(limit: int) -> None:
    decoder = PacketDecoder(Limits(max_header_block=limit))
    decoder.receive_data(PREFIX.pack(limit + 1, 0)[:-1])
    assert decoder.next_packet() is None  # seven bytes: the length is not known yet
    decoder.receive_data(PREFIX.pack(limit + 1, 0)[-1:])
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_packet()
    assert info.value.status == Status.HEADERS_TOO_LARGE


def test_header_block_at_the_limit_is_accepted() -> None:
    block = b"name: " + b"v" * 94
    decoder = PacketDecoder(Limits(max_header_block=len(block)))
    assert decode([frame(block)], decoder) == [Packet({"name": "v" * 94})]


@pytest.mark.parametrize("limit", [1024 * 1024, 10])
def test_payload_limit_is_checked_after_the_header_block(limit: int) -> None:
    decoder = PacketDecoder(Limits(max_payload=limit))
    decoder.receive_data(frame(b"route: /a", payload_len=limit + 1))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_packet()  # not one payload byte has been fed
    assert info.value.status == Status.TOO_LARGE


def test_payload_limit_waits_for_the_whole_header_block() -> None:
    decoder = PacketDecoder(Limits(max_payload=1))
    wire = frame(b"route: /a", payload_len=2)
    decoder.receive_data(wire[:-1])
    assert decoder.next_packet() is None
    decoder.receive_data(wire[-1:])
    with pytest.raises(RemoteProtocolError):
        decoder.next_packet()


def test_payload_at_the_limit_is_accepted() -> None:
    decoder = PacketDecoder(Limits(max_payload=4))
    assert decode([frame(b"a: 1", b"1234")], decoder) == [Packet({"a": "1"}, b"1234")]


def test_per_route_payload_limit() -> None:
    seen: list[Mapping[str, str]] = []

    def limit(headers: Mapping[str, str]) -> int:
        seen.append(dict(headers))
        return 3 if headers.get("route") == "/small" else 2_000_000

    decoder = PacketDecoder(payload_limit=limit)
    # A route may allow more than the connection default of 1 MiB...
    big = encode_packet({"route": "/big"}, b"x" * (1024 * 1024 + 1))
    assert decode([big], decoder)[0].payload == b"x" * (1024 * 1024 + 1)
    # ...or less, and the callback is asked before any payload byte is awaited.
    decoder.receive_data(frame(b"route: /small", payload_len=4))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_packet()
    assert info.value.status == Status.TOO_LARGE
    assert seen == [{"route": "/big"}, {"route": "/small"}]


def test_payload_limit_callback_is_asked_once_per_packet() -> None:
    calls: list[str] = []

    def limit(headers: Mapping[str, str]) -> int:
        calls.append(headers["n"])
        return 100

    wire = b"".join(encode_packet({"n": str(i)}, b"abc") for i in range(3))
    packets = decode(
        [wire[i : i + 1] for i in range(len(wire))], PacketDecoder(payload_limit=limit)
    )
    assert len(packets) == 3
    assert calls == ["0", "1", "2"]


# ---- errors -------------------------------------------------------------------------------


def test_protocol_error_carries_its_status() -> None:
    error = RemoteProtocolError(Status.TOO_LARGE, "too big")
    assert isinstance(error, ProtocolError)
    assert (error.status, error.message, str(error)) == (Status.TOO_LARGE, "too big", "too big")
    assert repr(error) == "RemoteProtocolError(413, 'too big')"


def test_every_status_has_a_phrase() -> None:
    assert all(status.phrase for status in Status)
    assert int(Status.CHECKSUM_MISMATCH) == 460
