"""``xstream --transport utp``: the CLI as a child process against a server on a uTP port."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from xstream_server.client import upload
from xstream_server.server import Server

from .conftest import random_file, utp_address

MiB = 1024 * 1024


async def xstream(state_dir: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xstream_server.cli.client",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "XSTREAM_STATE_DIR": str(state_dir)},
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    events = [json.loads(line) for line in out.decode().splitlines()]
    return process.returncode, events, err.decode()


async def test_upload_with_transport_utp(utp_server: Server, tmp_path: Path) -> None:
    path, digest = random_file(tmp_path, 3 * MiB)
    code, events, err = await xstream(
        tmp_path / "state",
        "--json",
        "upload",
        str(path),
        "--transport",
        "utp",
        "--server",
        utp_address(utp_server),
    )
    assert code == 0, err
    assert events[-1]["event"] == "done"
    assert events[-1]["sha256"] == digest


async def test_request_with_transport_utp_from_the_environment(
    utp_server: Server, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("XSTREAM_TRANSPORT", "utp")
    code, events, err = await xstream(
        tmp_path / "state",
        "--json",
        "request",
        "/echo",
        "--json",
        '{"over": "utp"}',
        "-s",
        utp_address(utp_server),
    )
    assert code == 0, err
    assert events[0]["payload"] == {"over": "utp"}


async def test_a_killed_utp_upload_resumes_over_tcp(utp_server: Server, tmp_path: Path) -> None:
    path, digest = random_file(tmp_path, 48 * MiB)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xstream_server.cli.client",
        "--json",
        "--transport",
        "utp",
        "upload",
        str(path),
        "-s",
        utp_address(utp_server),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "XSTREAM_STATE_DIR": str(tmp_path / "state")},
    )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        key_event = json.loads(await process.stdout.readline())
    assert key_event["event"] == "key"
    process.kill()  # no FIN, no RESET: the uTP connection just goes silent
    await process.wait()
    result = await upload(path, server=f"127.0.0.1:{utp_server.port}", key=key_event["key"])
    assert result.sha256 == digest
    assert result.key == key_event["key"]
