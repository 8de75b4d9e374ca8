"""The uTP packet codec: round trips, the selective-ACK bitmask, junk."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xstream_server.utp import Packet, PacketError, PacketType, decode_packet, seq_distance
from xstream_server.utp.packets import sack_bits, sack_mask

_u16 = st.integers(0, 0xFFFF)
_u32 = st.integers(0, 0xFFFFFFFF)


@given(
    packet_type=st.sampled_from(PacketType),
    ids=st.tuples(_u16, _u16, _u16),
    stamps=st.tuples(_u32, _u32, _u32),
    sack=st.none()
    | st.binary(min_size=1, max_size=8).map(lambda b: b.ljust(4 * -(-len(b) // 4), b"\0")),
    payload=st.binary(max_size=64),
)
def test_round_trip(
    packet_type: PacketType,
    ids: tuple[int, int, int],
    stamps: tuple[int, int, int],
    sack: bytes | None,
    payload: bytes,
) -> None:
    packet = Packet(
        packet_type, ids[0], ids[1], ids[2], stamps[0], stamps[1], stamps[2], sack, payload
    )
    encoded = packet.encode()
    assert len(encoded) == 20 + (0 if sack is None else 2 + len(sack)) + len(payload)
    assert decode_packet(encoded) == packet


def test_header_layout_is_bep_29() -> None:
    packet = Packet(PacketType.SYN, 0x1234, seq_nr=1, ack_nr=0, wnd_size=0x10000, timestamp=5)
    assert packet.encode() == bytes.fromhex("4100 1234 00000005 00000000 00010000 0001 0000")


def test_unknown_extensions_are_skipped() -> None:
    header = bytearray(Packet(PacketType.DATA, 1, 2, 3).encode())
    header[1] = 2  # extension 2 (libutp's "extension bits"), 8 bytes, then the SACK
    datagram = bytes(header) + bytes((1, 8)) + bytes(8) + bytes((0, 4)) + b"\x01\0\0\0" + b"data"
    packet = decode_packet(datagram)
    assert packet.sack == b"\x01\0\0\0"
    assert packet.payload == b"data"


@given(st.binary(max_size=40))
def test_junk_is_a_packet_or_a_packet_error(junk: bytes) -> None:
    with contextlib.suppress(PacketError):
        decode_packet(junk)


@pytest.mark.parametrize(
    "datagram",
    [b"", b"\x41" * 19, b"\x42" + bytes(19), b"\x51" + bytes(19), b"\x01\x01" + bytes(18)],
)
def test_malformed_datagrams(datagram: bytes) -> None:
    with pytest.raises(PacketError):
        decode_packet(datagram)


def test_sack_bit_order_follows_libutp() -> None:
    # Bit i (byte i // 8, bit i % 8) stands for ack_nr + 2 + i.
    mask = sack_mask(100, {102, 110, 135}, limit_bytes=8)
    assert mask == bytes((0b1, 0b1, 0, 0, 0b10, 0, 0, 0))
    assert sack_mask(100, {102, 110, 135}) == bytes((0b1, 0b1, 0, 0))  # 32 bits by default
    assert sack_bits(100, mask) == [102, 110, 135]
    assert sack_bits(0xFFFF, sack_mask(0xFFFF, {1, 30})) == [1, 30]


@given(_u16, st.integers(-0x8000, 0x7FFF))
def test_sequence_distance_wraps(a: int, delta: int) -> None:
    assert seq_distance((a + delta) & 0xFFFF, a) == delta
