"""The ceiling: a bare uvloop ``BufferedProtocol`` that writes every received byte to a file.

No framing beyond a fixed 8-byte handshake, no Redis, no state. It exists so that every
upload scenario can be reported as a fraction of what a Python server can reach on the same
machine in the same run.

Wire format, one upload per connection::

    client -> server   u64 big-endian N, then exactly N raw bytes
    server -> client   u64 big-endian N, once all N bytes are written (and fsynced when
                       durability is on); then the server closes the connection

Each upload goes to a new file in ``--data-dir``. With ``--fsync`` the file is fsynced at
the same cadence as the xstream server's checkpoints (every ``--checkpoint-bytes`` or
``--checkpoint-seconds``, whichever comes first, in a worker thread so that reading goes on)
and once more before the reply; without it, bytes are only handed to the page cache.

Run: ``python -m benchmarks.baseline_server --port 7100 --data-dir /tmp/base [--fsync]``.
It prints ``listening on HOST:PORT`` when ready and stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import resource
import signal
import struct
import time
from pathlib import Path
from typing import Final, cast

import uvloop

__all__ = ["BaselineConfig", "BaselineProtocol", "main", "serve"]

HANDSHAKE: Final = struct.Struct(">Q")
MiB: Final = 1024 * 1024


class BaselineConfig:
    def __init__(
        self,
        data_dir: Path,
        fsync: bool,
        checkpoint_bytes: int,
        checkpoint_seconds: float,
        buffer_size: int,
    ) -> None:
        self.data_dir = data_dir
        self.fsync = fsync
        self.checkpoint_bytes = checkpoint_bytes
        self.checkpoint_seconds = checkpoint_seconds
        self.buffer_size = buffer_size
        self.file_numbers = itertools.count()


class BaselineProtocol(asyncio.BufferedProtocol):
    """One upload: read the length, then write every byte straight from the receive buffer."""

    def __init__(self, config: BaselineConfig) -> None:
        self._config = config
        self._buffer = memoryview(bytearray(config.buffer_size))
        self._transport: asyncio.Transport | None = None
        self._handshake = bytearray()
        self._remaining = -1  # -1 until the handshake has arrived
        self._total = 0
        self._fd = -1
        self._unsynced = 0
        self._last_sync = 0.0
        self._sync_in_flight: asyncio.Future[None] | None = None
        self._finishing: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = self._buffer[:nbytes]
        if self._remaining < 0:
            missing = HANDSHAKE.size - len(self._handshake)
            self._handshake += data[:missing]
            data = data[missing:]
            if len(self._handshake) < HANDSHAKE.size:
                return
            (self._total,) = HANDSHAKE.unpack(self._handshake)
            self._remaining = self._total
            name = self._config.data_dir / f"{next(self._config.file_numbers)}.bin"
            self._fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._last_sync = time.monotonic()
        if len(data) > self._remaining:
            self._fail()
            return
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
            self._remaining -= written
            self._unsynced += written
        if self._remaining == 0:
            assert self._transport is not None
            self._transport.pause_reading()
            self._finishing = asyncio.ensure_future(self._finish())
        elif self._config.fsync:
            self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        if self._sync_in_flight is not None and not self._sync_in_flight.done():
            return
        due_by_time = time.monotonic() - self._last_sync >= self._config.checkpoint_seconds
        if self._unsynced >= self._config.checkpoint_bytes or due_by_time:
            self._unsynced = 0
            self._last_sync = time.monotonic()
            loop = asyncio.get_running_loop()
            self._sync_in_flight = loop.run_in_executor(None, os.fsync, self._fd)

    async def _finish(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sync_in_flight is not None:
            await self._sync_in_flight
        if self._config.fsync:
            await loop.run_in_executor(None, os.fsync, self._fd)
        os.close(self._fd)
        self._fd = -1
        assert self._transport is not None
        if not self._transport.is_closing():
            self._transport.write(HANDSHAKE.pack(self._total))
            self._transport.close()

    def _fail(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._fd >= 0 and self._remaining != 0:
            os.close(self._fd)
            self._fd = -1


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(host: str, port: int, config: BaselineConfig) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: BaselineProtocol(config), host, port, backlog=4096, reuse_address=True
    )
    bound = server.sockets[0].getsockname()
    mode = "fsync" if config.fsync else "no-fsync"
    print(f"baseline ({mode}) listening on {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7100)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--checkpoint-bytes", type=int, default=64 * MiB)
    parser.add_argument("--checkpoint-seconds", type=float, default=1.0)
    parser.add_argument("--buffer-size", type=int, default=256 * 1024)
    args = parser.parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    raise_open_files_limit()
    config = BaselineConfig(
        args.data_dir, args.fsync, args.checkpoint_bytes, args.checkpoint_seconds, args.buffer_size
    )
    uvloop.run(serve(args.host, args.port, config))


if __name__ == "__main__":
    main()
