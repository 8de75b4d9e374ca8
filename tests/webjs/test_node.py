"""The JavaScript client's own tests, run under Node (``node --test``): its packet codec,
sha256 and resume bookkeeping (``protocol.test.mjs``), and its ``upload()`` against a real
server over a real WebSocket (``upload.live.mjs``, Node's WebSocket)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from xstream_server.server import Server

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


def _node_major() -> int:
    assert NODE is not None
    version = subprocess.run([NODE, "--version"], capture_output=True, text=True, check=True)
    return int(version.stdout.strip().lstrip("v").split(".")[0])


def test_protocol_code_under_node() -> None:
    assert NODE is not None
    run = subprocess.run(
        [NODE, "--test", str(HERE / "protocol.test.mjs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "# fail 0" in run.stdout


async def test_upload_from_node_against_the_server(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XSTREAM_UPLOAD_WINDOW", str(1024 * 1024))  # partial grants throughout
    assert NODE is not None
    flags = ["--experimental-websocket"] if _node_major() < 22 else []
    environment = {
        **os.environ,
        "XSTREAM_WS_URL": f"ws://127.0.0.1:{server.http_port}/x-stream",
        "XSTREAM_OUT": str(tmp_path),
    }
    process = await asyncio.create_subprocess_exec(
        NODE,
        *flags,
        "--test",
        str(HERE / "upload.live.mjs"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=environment,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    text = output.decode()
    assert process.returncode == 0, text
    assert "# fail 0" in text
    _check_stored(tmp_path, server.settings.data_dir / "streams" / "complete")


def _check_stored(results: Path, complete: Path) -> None:
    """What node uploaded is on disk, byte for byte (it wrote each key and sha256 here)."""
    written = sorted(results.glob("*.key"))
    assert len(written) == 4
    for result in written:
        key, digest = result.read_text().split()
        assert hashlib.sha256((complete / key).read_bytes()).hexdigest() == digest
