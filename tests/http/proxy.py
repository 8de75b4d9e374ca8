"""A loopback TCP proxy that cuts connections: each connection that has carried more than
``cut_after`` bytes towards the server (towards the client with ``downstream``: a
download) is reset on both sides, ``cuts`` times in all."""

from __future__ import annotations

import asyncio
import contextlib


class CuttingProxy:
    def __init__(
        self, target_port: int, *, cut_after: int, cuts: int, downstream: bool = False
    ) -> None:
        self.target_port = target_port
        self.downstream = downstream
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        ends = (client_w, server_w)
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w, ends, count=not self.downstream),
                self._pipe(server_r, client_w, ends, count=self.downstream),
            )
        finally:
            for writer in ends:
                writer.transport.abort()
            self._tasks.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ends: tuple[asyncio.StreamWriter, ...],
        *,
        count: bool,
    ) -> None:
        carried = 0
        with contextlib.suppress(OSError):
            while data := await reader.read(64 * 1024):
                writer.write(data)
                await writer.drain()
                carried += len(data)
                if count and self.cuts_left > 0 and carried > self.cut_after:
                    self.cuts_left -= 1
                    for end in ends:
                        end.transport.abort()  # a reset, as when a network goes away
                    return
            if writer.can_write_eof():
                writer.write_eof()
