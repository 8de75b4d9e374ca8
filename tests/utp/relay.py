"""A lossy UDP relay for uTP tests and benchmarks."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Callable

__all__ = ["LossyRelay", "start_relay"]


class LossyRelay(asyncio.DatagramProtocol):
    """A UDP relay between one client and the server that drops, duplicates and delays
    (so reorders) a few percent of the datagrams, as a seeded ``Random`` decides."""

    def __init__(
        self, server: tuple[str, int], seed: int, rate: float, stall_after: int | None = None
    ) -> None:
        self.server = server
        self.rng = random.Random(seed)
        self.rate = rate
        self.client: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.counts = {"dropped": 0, "duplicated": 0, "delayed": 0, "passed": 0}
        # After this many datagrams from the client, nothing passes either way any more:
        # a network gone silent. ``stalled`` is set then.
        self.stall_after = stall_after
        self.stalled = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.stalled.is_set():
            return
        if addr != self.server:
            self.client = addr
            target = self.server
            if self.stall_after is not None:
                self.stall_after -= 1
                if self.stall_after < 0:
                    self.stalled.set()
                    return
        elif self.client is not None:
            target = self.client
        else:
            return
        roll = self.rng.random()
        if roll < self.rate:
            self.counts["dropped"] += 1
            return
        send = self._sender(data, target)
        if roll < 2 * self.rate:
            self.counts["duplicated"] += 1
            send()
            send()
        elif roll < 3 * self.rate:
            self.counts["delayed"] += 1  # overtaken by the datagrams after it
            asyncio.get_running_loop().call_later(self.rng.random() * 0.01, send)
        else:
            self.counts["passed"] += 1
            send()

    def _sender(self, data: bytes, target: tuple[str, int]) -> Callable[[], None]:
        def send() -> None:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.sendto(data, target)

        return send


async def start_relay(
    server: tuple[str, int], seed: int, rate: float, stall_after: int | None = None
) -> tuple[asyncio.DatagramTransport, LossyRelay]:
    """A relay on a free loopback port in front of ``server``."""
    loop = asyncio.get_running_loop()
    transport, relay = await loop.create_datagram_endpoint(
        lambda: LossyRelay(server, seed, rate, stall_after), local_addr=("127.0.0.1", 0)
    )
    return transport, relay


async def _serve(server: tuple[str, int], seed: int, rate: float) -> None:
    transport, relay = await start_relay(server, seed, rate)
    print(json.dumps({"port": transport.get_extra_info("sockname")[1]}), flush=True)
    try:
        # Until stdin closes: the parent ends the relay by closing the pipe.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        transport.close()
    print(json.dumps(relay.counts), flush=True)


if __name__ == "__main__":
    # python -m tests.utp.relay HOST:PORT RATE [SEED]: a relay in a process of its own (the
    # benchmark runs one so that its CPU is neither the client's nor the server's).
    host, _, port = sys.argv[1].rpartition(":")
    asyncio.run(
        _serve((host, int(port)), int(sys.argv[3]) if len(sys.argv) > 3 else 1, float(sys.argv[2]))
    )
