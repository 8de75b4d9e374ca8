"""The sans-IO uTP connection on a simulated clock and network: no sockets, no sleeps."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xstream_server.utp import (
    ConnectionState,
    Packet,
    PacketType,
    UtpConnection,
    UtpSettings,
    decode_packet,
)
from xstream_server.utp.connection import MIN_TIMEOUT

from .simnet import Link, SimNet


def _payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def _transfer(net: SimNet, data: bytes, back: bytes = b"") -> None:
    net.run_until(lambda: net.client.state is ConnectionState.CONNECTED)
    net.client.write(data)
    net.run_until(lambda: net.server is not None)
    assert net.server is not None
    if back:
        net.server.write(back)
    net.run_until(lambda: len(net.received[1]) >= len(data) and len(net.received[0]) >= len(back))


def test_handshake_learns_the_peers_random_initial_sequence_number() -> None:
    net = SimNet(1)
    _transfer(net, b"hello", b"world")
    assert net.received == [bytearray(b"world"), bytearray(b"hello")]
    assert net.server is not None
    assert net.server.recv_id == net.client.send_id
    assert net.server.send_id == net.client.recv_id
    assert net.client.send_id == (net.client.recv_id + 1) & 0xFFFF


@pytest.mark.parametrize("seed", range(6))
def test_every_byte_once_and_in_order_through_loss_reordering_duplication(seed: int) -> None:
    link = Link(delay=0.02, jitter=0.01, loss=0.05, duplicate=0.03)
    net = SimNet(seed, forward=link, backward=Link(delay=0.02, jitter=0.01, loss=0.05))
    data, back = _payload(400_000, seed), _payload(50_000, seed + 100)
    _transfer(net, data, back)
    assert bytes(net.received[1]) == data
    assert bytes(net.received[0]) == back


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, 60_000),
    loss=st.floats(0, 0.2),
    duplicate=st.floats(0, 0.2),
    jitter=st.floats(0, 0.05),
)
def test_delivery_under_any_mix_of_faults(
    seed: int, size: int, loss: float, duplicate: float, jitter: float
) -> None:
    link = Link(delay=0.005, jitter=jitter, loss=loss, duplicate=duplicate)
    # Up to 20 % loss each way: the server must wait as long as the client keeps resending.
    patient = UtpSettings(max_retransmissions=30, handshake_timeout=3600)
    net = SimNet(seed, forward=link, backward=link, settings=patient)
    data = _payload(size, seed)
    _transfer(net, data)
    assert bytes(net.received[1]) == data


@pytest.mark.parametrize(("client_seq", "server_seq"), [(0xFFF0, 0xFFFE), (0xFFFF, 0x7FFF)])
def test_sequence_numbers_wrap(client_seq: int, server_seq: int) -> None:
    net = SimNet(3, forward=Link(loss=0.05, jitter=0.005), client_seq=client_seq)
    net.server_seq = server_seq
    data, back = _payload(300_000), _payload(100_000, 9)  # 200+ packets: past 0xFFFF
    _transfer(net, data, back)
    assert bytes(net.received[1]) == data
    assert bytes(net.received[0]) == back


def test_the_window_shrinks_when_queuing_delay_grows() -> None:
    growing = {"since": None}

    def queue_delay(now: float) -> float:
        since = growing["since"]
        return 0.0 if since is None else min(0.5, (now - since) * 0.5)

    net = SimNet(
        4, forward=Link(delay=0.1, queue_delay=queue_delay), settings=UtpSettings(max_cwnd=100_000)
    )
    net.run_until(lambda: net.client.state is ConnectionState.CONNECTED)
    chunk = _payload(200_000)

    def keep_sending_until(moment: float) -> None:
        while net.now < moment:
            if net.client.buffered_bytes < len(chunk):
                net.client.write(chunk)
            net.step()

    keep_sending_until(net.now + 3)
    assert net.client.queuing_delay < 0.01
    open_window = net.client.cwnd
    assert open_window == 100_000
    growing["since"] = net.now  # type: ignore[assignment]
    keep_sending_until(net.now + 20)
    assert net.client.queuing_delay > 0.2
    assert net.client.cwnd < open_window / 2


def test_timeout_follows_rtt_with_a_500_ms_floor() -> None:
    net = SimNet(5, forward=Link(delay=0.001), backward=Link(delay=0.001))
    _transfer(net, _payload(50_000))
    assert net.client._timeout == MIN_TIMEOUT
    slow = SimNet(5, forward=Link(delay=0.4), backward=Link(delay=0.4))
    _transfer(slow, _payload(50_000))
    assert slow.client._timeout > 0.8


def test_close_sends_fin_and_waits_for_its_ack() -> None:
    net = SimNet(6, forward=Link(loss=0.1), backward=Link(loss=0.1))
    data = _payload(100_000)
    _transfer(net, data)
    net.client.close(net.now)
    with pytest.raises(ConnectionError):
        net.client.write(b"more")
    assert net.server is not None
    server = net.server
    net.run_until(lambda: server.eof)
    assert bytes(net.received[1]) == data
    net.run_until(lambda: net.client.fin_acked)
    server.write(b"last words")
    server.close(net.now)
    net.run_until(lambda: net.client.finished and server.finished)
    assert net.client.state is ConnectionState.CLOSED
    assert server.state is ConnectionState.CLOSED
    assert bytes(net.received[0]) == b"last words"


def test_close_gives_up_after_its_timeout_when_the_fin_is_never_acked() -> None:
    net = SimNet(7)
    _transfer(net, b"x")
    net.links = (Link(drop=lambda t: t is PacketType.FIN), net.links[1])
    start = net.now
    net.client.close(net.now)
    net.run_until(lambda: net.client.finished)
    assert net.client.state is ConnectionState.CLOSED
    assert net.now - start == pytest.approx(net.settings.close_timeout, abs=0.1)


def test_destroy_sends_reset_and_does_not_wait() -> None:
    net = SimNet(8)
    _transfer(net, b"x")
    net.client.write(_payload(100_000))  # never sent: destroy drops it
    net.client.destroy(net.now)
    assert net.client.state is ConnectionState.RESET
    assert net.client.deadline is None
    datagrams = net.client.flush(net.now)
    assert [PacketType(d[0] >> 4) for d in datagrams] == [PacketType.RESET]
    net._transmit(0, datagrams)
    assert net.server is not None
    server = net.server
    net.run_until(lambda: server.finished)
    assert server.state is ConnectionState.RESET
    assert server.error == "reset by peer"


def test_a_silent_peer_ends_the_connection() -> None:
    net = SimNet(9)
    _transfer(net, b"x")
    net.links = (Link(loss=1.0), Link(loss=1.0))
    net.client.write(b"into the void")
    net.run_until(lambda: net.client.finished)
    assert net.client.state is ConnectionState.RESET


def test_a_slow_reader_closes_the_window_and_reopens_it() -> None:
    small = UtpSettings(receive_buffer=20_000)
    client = UtpConnection.connect(100, 0.0, random.Random(1), small)
    syn = client.flush(0.0)
    server = UtpConnection.accept(decode_packet(syn[0]), 0.0, random.Random(2), small)
    for datagram in server.flush(0.0):
        client.receive(decode_packet(datagram), 0.01)
    data = _payload(200_000)
    client.write(data)
    now, got = 0.01, bytearray()
    for _ in range(10_000):
        now += 0.01
        for datagram in client.flush(now):
            server.receive(decode_packet(datagram), now)
        assert server.readable <= 2 * small.receive_buffer
        if int(now * 100) % 5 == 0:  # the application reads now and then
            got += server.read()
        for datagram in server.flush(now):
            client.receive(decode_packet(datagram), now)
        if client.deadline is not None and now >= client.deadline:
            client.on_timer(now)
        if len(got) == len(data):
            break
    assert bytes(got) == data


def test_an_accepted_connection_waits_for_the_peer_to_speak_again() -> None:
    client = UtpConnection.connect(7, 0.0, random.Random(1))
    (syn,) = client.flush(0.0)
    server = UtpConnection.accept(decode_packet(syn), 0.0, random.Random(2))
    assert not server.established
    assert server.flush(0.0)  # the answer, a STATE
    assert server.deadline == server.settings.handshake_timeout
    server.on_timer(server.settings.handshake_timeout)
    assert server.state is ConnectionState.RESET
    assert server.error == "handshake timed out"


def test_data_completes_the_handshake_when_the_state_answer_is_lost() -> None:
    client = UtpConnection.connect(9, 0.0, random.Random(1))
    (syn,) = client.flush(0.0)
    server = UtpConnection.accept(decode_packet(syn), 0.0, random.Random(2))
    server.flush(0.0)  # the STATE answer, lost
    server.write(b"server speaks first")
    (data,) = server.flush(0.1)
    client.receive(decode_packet(data), 0.2)
    assert client.state is ConnectionState.CONNECTED
    assert client.read() == b"server speaks first"


def test_a_finished_connection_has_no_timer() -> None:
    client = UtpConnection.connect(5, 0.0, random.Random(1))
    (syn,) = client.flush(0.0)
    server = UtpConnection.accept(decode_packet(syn), 0.0, random.Random(2))
    server.on_timer(100.0)
    assert server.finished
    assert server.deadline is None


def test_a_reset_after_both_fins_is_a_clean_end() -> None:
    net = SimNet(12)
    _transfer(net, b"all of it")
    assert net.server is not None
    server = net.server
    server.close(net.now)
    net.run_until(lambda: net.client.eof)
    net.links = (net.links[0], Link(loss=1.0))  # the server's acks are lost from now on
    net.client.close(net.now)
    net.client.flush(net.now)
    net.client.receive(Packet(PacketType.RESET, net.client.recv_id, 0, 0), net.now)
    assert net.client.state is ConnectionState.CLOSED
    assert net.client.error is None
