"""The data directory is private (issue 13, finding 5): every folder under it is 0700 and
every file 0600 (part files are named after stream keys, and a key is all it takes to take
an upload over), a data directory left readable by an older version is tightened at
start-up, and another local user can neither enter it nor reach the embedded Redis."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ServerFactory
from tests.durability.support import MiB, Upload, grant, part_size, sha256, until
from tests.security.support import free_port, older_redis
from xstream_server.server import Server


async def upload_one_and_leave_one_open(server: Server, data_dir: Path) -> None:
    """A finished file in ``complete/`` and a part in ``parts/``."""
    done = Upload(os.urandom(200_000))
    assert await done.run(server.port), done.errors
    assert done.checksum == sha256(done.data)
    open_ = Upload(os.urandom(MiB))
    link = await open_.connect(server.port)
    offset, _ = grant(await link.request(open_.stream_request()), open_.total)
    assert offset == 0
    await link.send_raw(open_.data[: MiB // 2])
    link.abort()  # the server checkpoints what it received
    part = data_dir / "streams" / "parts" / f"{open_.key}.part"
    await until(lambda: part_size(part) == MiB // 2)


def exposed(data_dir: Path) -> list[str]:
    """Everything under ``data_dir`` (itself included) that group or others can access."""
    found = []
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = path.lstat().st_mode
        if mode & 0o077:
            found.append(f"{path.relative_to(data_dir.parent)} {mode & 0o777:04o}")
    return found


async def test_every_folder_and_file_under_the_data_directory_is_private(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    # What an older version left: folders 0755, Redis's append-only file and log 0644.
    for folder in (data / "streams" / "parts", data / "streams" / "complete"):
        folder.mkdir(parents=True)
    orphan = await asyncio.to_thread(older_redis, data / "redis", free_port())
    orphan.send_signal(signal.SIGTERM)
    await asyncio.to_thread(orphan.wait, 10)
    assert (data / "redis" / "appendonly.aof").stat().st_mode & 0o777 == 0o644
    assert exposed(data)

    async with asyncio.timeout(30), make_server(redis_url=None, data_dir=data) as server:
        await upload_one_and_leave_one_open(server, data)
        assert exposed(data) == []
        assert list((data / "streams" / "complete").iterdir())
        assert list((data / "streams" / "parts").iterdir())
    assert exposed(data) == []


# Run as nobody: reports every path it could list, read or connect to, and every TCP port
# it could talk Redis to.
PROBE = r"""
import json, os, socket, sys
paths, ports = json.loads(sys.argv[1])
reached = []
for path in paths:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        elif path.endswith(".sock"):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
        reached.append(path)
    except OSError:
        pass
for port in ports:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            reached.append(f"port {port}: {s.recv(64)!r}")
    except OSError:
        pass
print(json.dumps(reached))
"""


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every local user can enter (like /srv), unlike pytest's own (0700)."""
    folder = Path(tempfile.mkdtemp(prefix="xstream-security-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


SYSTEM_PYTHON = "/usr/bin/python3"  # one that nobody may run, unlike a virtualenv's under /root
NOBODY_GROUP = next((g.gr_gid for g in grp.getgrall() if g.gr_name in ("nogroup", "nobody")), 65534)


@pytest.mark.skipif(os.geteuid() != 0, reason="running a probe as nobody needs root")
@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"no {SYSTEM_PYTHON} for the probe")
async def test_another_local_user_reaches_neither_the_data_nor_the_embedded_redis(
    make_server: ServerFactory, open_folder: Path
) -> None:
    data = open_folder / "data"
    async with asyncio.timeout(30), make_server(redis_url=None, data_dir=data) as server:
        await upload_one_and_leave_one_open(server, data)
        embedded = server.embedded_redis
        assert embedded is not None and embedded.process is not None
        paths = [str(p) for p in [data, *data.rglob("*")]]  # the socket is in data/redis
        assert any(p.endswith(".part") for p in paths)
        child = psutil.Process(embedded.process.pid)
        ports = [c.laddr.port for c in child.net_connections("inet") if c.status == "LISTEN"]
        probe = await asyncio.to_thread(
            subprocess.run,
            [SYSTEM_PYTHON, "-c", PROBE, json.dumps([paths, ports])],
            capture_output=True,
            text=True,
            timeout=20,
            user="nobody",
            group=NOBODY_GROUP,
            extra_groups=[],
            cwd="/",
        )
        assert probe.returncode == 0, probe.stderr
        assert json.loads(probe.stdout) == []
        assert str(data / "redis" / "redis.sock") in paths  # it was tried too
