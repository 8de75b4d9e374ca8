"""The pure-Python cost of the sans-IO uTP core per packet, without sockets or asyncio:

    .venv/bin/python -m benchmarks.utp_core [--size 64] [--repeat 3]

A connecting and an accepting ``UtpConnection`` move ``--size`` MiB on a perfect network
(every datagram delivered at once, in order); the receiver acknowledges every 8 DATA
packets, as the asyncio adapter does within a burst. Printed: microseconds of CPU per DATA
packet on the receiving side (``decode_packet`` + ``receive``, the acks' ``flush`` and
``read``) and on the sending side (``flush`` of DATA packets, ``decode_packet`` +
``receive`` of the acks): the part of the server's CPU per MB that the core is, and what a
change to the core saves. To measure another tree's core, copy this file into that tree
and run it there (``cd TREE && PYTHONPATH=. python -m benchmarks.utp_core``).
"""

from __future__ import annotations

import argparse
import statistics
import time

from xstream_server.utp.connection import UtpConnection
from xstream_server.utp.packets import PacketType, decode_packet

MiB = 1024 * 1024
ACK_EVERY = 8


def transfer(size: int) -> tuple[float, float, int]:
    """(receiver seconds, sender seconds, DATA packets) for ``size`` bytes."""
    clock = 1000.0
    sender = UtpConnection.connect(1, clock)
    syn = sender.flush(clock)[0]
    receiver = UtpConnection.accept(decode_packet(syn), clock)
    for datagram in receiver.flush(clock):
        sender.receive(decode_packet(datagram), clock)
    block = bytes(range(256)) * (MiB // 256)
    written = received = packets = 0
    receiving = sending = 0.0
    cpu = time.process_time
    while received < size:
        if written < size and sender.buffered_bytes < 4 * MiB:
            sender.write(block[: min(MiB, size - written)])
            written += min(MiB, size - written)
        clock += 0.0005
        started = cpu()
        datagrams = sender.flush(clock)
        sending += cpu() - started
        started = cpu()
        acks: list[bytes] = []
        arrivals = 0
        for datagram in datagrams:
            packet = decode_packet(datagram)
            receiver.receive(packet, clock)
            if packet.type is PacketType.DATA:
                packets += 1
                arrivals += 1
                if arrivals % ACK_EVERY == 0:
                    acks += receiver.flush(clock)
        acks += receiver.flush(clock)
        received += len(receiver.read())
        receiving += cpu() - started
        started = cpu()
        for datagram in acks:
            sender.receive(decode_packet(datagram), clock)
        sending += cpu() - started
    return receiving, sending, packets


def main(size: int, repeat: int) -> None:
    runs = [transfer(size) for _ in range(repeat)]
    packets = runs[0][2]
    receiver = statistics.median(r[0] for r in runs) / packets * 1e6
    sender = statistics.median(r[1] for r in runs) / packets * 1e6
    print(f"{size // MiB} MiB, {packets} DATA packets, median of {repeat}")
    per_mb = packets / (size / 1e6) / 1e6
    print(f"receiver  {receiver:6.2f} µs per packet  {receiver * per_mb:.4f} s/MB")
    print(f"sender    {sender:6.2f} µs per packet  {sender * per_mb:.4f} s/MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="MiB [64]")
    parser.add_argument("--repeat", type=int, default=3, help="runs [3]")
    arguments = parser.parse_args()
    main(arguments.size * MiB, arguments.repeat)
