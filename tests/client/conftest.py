"""Client-side fixtures: a loopback proxy that cuts connections, and random files."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest


class CuttingProxy:
    """Forwards TCP between a client and ``target`` on 127.0.0.1.

    Connection number ``i`` (counting from 0) is cut after ``cuts[i]`` bytes from the
    client have been forwarded: both sides are dropped at once, as a network failure
    would. With ``stalls[i]`` it instead stops forwarding after that many bytes and keeps
    both sockets open, like a network that went silent. Connections beyond the lists are
    forwarded untouched.
    """

    def __init__(
        self, target_port: int, cuts: Sequence[int] = (), stalls: Sequence[int] = ()
    ) -> None:
        self.target_port = target_port
        self.cuts = list(cuts)
        self.stalls = list(stalls)
        self.stalled = asyncio.Event()  # set when a connection reached its stall point
        self.connections = 0
        self.cuts_made = 0
        self.forwarded: list[int] = []  # client→server bytes forwarded, per connection
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()

    async def start(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def address(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        self._closing.set()
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        index = self.connections
        self.connections += 1
        self.forwarded.append(0)
        limit = self.cuts[index] if index < len(self.cuts) else None
        stall = self.stalls[index] if index < len(self.stalls) else None
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.append(up_writer)
        upstream = asyncio.create_task(self._pump(reader, up_writer, index, limit, stall))
        downstream = asyncio.create_task(self._pump(up_reader, writer, None, None, None))
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Either side ended or the cut came: drop both, like a failed network.
            writer.transport.abort()
            up_writer.transport.abort()
            for pump in (upstream, downstream):
                pump.cancel()
            await asyncio.gather(upstream, downstream, return_exceptions=True)
            self._tasks.discard(task)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        index: int | None,
        limit: int | None,
        stall: int | None,
    ) -> None:
        remaining = limit if stall is None else stall
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await source.read(64 * 1024)
                if not data:
                    return
                if remaining is not None:
                    data = data[:remaining]
                    remaining -= len(data)
                sink.write(data)
                await sink.drain()
                if index is not None:
                    self.forwarded[index] += len(data)
                if remaining == 0 and stall is not None:
                    self.stalled.set()
                    await self._closing.wait()  # silent until the proxy is closed
                if remaining == 0:
                    self.cuts_made += 1
                    return


ProxyFactory = Callable[..., Awaitable[CuttingProxy]]


@pytest.fixture
async def make_proxy() -> AsyncIterator[ProxyFactory]:
    """``await make_proxy(target_port, cuts=(...), stalls=(...))``; closed at teardown."""
    proxies: list[CuttingProxy] = []

    async def make(
        target_port: int, cuts: Sequence[int] = (), stalls: Sequence[int] = ()
    ) -> CuttingProxy:
        proxy = await CuttingProxy(target_port, cuts, stalls).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.close()


RandomFile = Callable[[int], tuple[Path, str]]


@pytest.fixture
def random_file(tmp_path: Path) -> RandomFile:
    """``random_file(size)`` → (path, sha256 hex) of a new file of random bytes."""
    counter = 0

    def make(size: int) -> tuple[Path, str]:
        nonlocal counter
        counter += 1
        path = tmp_path / f"upload-{counter}.bin"
        data = os.urandom(size)
        path.write_bytes(data)
        return path, hashlib.sha256(data).hexdigest()

    return make
