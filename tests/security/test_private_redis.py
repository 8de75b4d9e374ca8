"""The embedded Redis is private (issue 13, finding 1): no TCP listener, a unix socket that
answers nobody without the generated password, and with it no command that changes Redis's
configuration or files (CONFIG, MODULE...). The password is never on a command line nor in
a log."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import psutil
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from tests.conftest import ServerFactory
from tests.durability.support import Upload, sha256

DISABLED = [
    ("CONFIG", "SET", "appendfsync", "no"),
    ("CONFIG", "GET", "dir"),
    ("MODULE", "LIST"),
    ("DEBUG", "SLEEP", "0"),
    ("SAVE",),
    ("BGREWRITEAOF",),
    ("SHUTDOWN", "NOSAVE"),
    ("REPLICAOF", "127.0.0.1", "1"),
    ("FLUSHALL",),
    ("ACL", "LIST"),
]


async def test_embedded_redis_has_no_tcp_listener_and_refuses_strangers_and_dangerous_commands(
    make_server: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "data"
    async with asyncio.timeout(30), make_server(redis_url=None, data_dir=data) as server:
        embedded = server.embedded_redis
        assert embedded is not None and embedded.process is not None
        child = psutil.Process(embedded.process.pid)
        assert child.net_connections(kind="inet") == []

        upload = Upload(os.urandom(300_000))  # the server itself gets through
        assert await upload.run(server.port), upload.errors
        assert upload.checksum == sha256(upload.data)
        assert upload.key is not None

        socket_path = str(embedded.socket_path)
        # A client without the password (here, one that could reach the socket) is refused.
        reader, writer = await asyncio.open_unix_connection(socket_path)
        writer.write(b"HGETALL xs:{%s}:stream\r\nAUTH guess\r\n" % upload.key.encode())
        assert (await reader.readline()).startswith(b"-NOAUTH")
        assert (await reader.readline()).startswith(b"-WRONGPASS")
        writer.close()

        password_file = data / "redis" / "password"
        assert password_file.stat().st_mode & 0o777 == 0o600
        password = password_file.read_text().strip()
        assert len(password) >= 32
        insider = aioredis.Redis(unix_socket_path=socket_path, password=password)
        try:
            assert await insider.hget(f"xs:{{{upload.key}}}:stream", "state") == b"complete"
            for command in DISABLED:
                with pytest.raises(ResponseError, match="unknown command"):
                    await insider.execute_command(*command)  # type: ignore[no-untyped-call]
            assert await insider.ping()  # SHUTDOWN did not happen
        finally:
            await insider.aclose()

        assert password not in " ".join(child.cmdline())
        assert password not in " ".join(psutil.Process().cmdline())
        assert password not in (data / "redis" / "redis.log").read_text()
    assert "listening on" in caplog.text and "embedded" in caplog.text
    assert password not in caplog.text
