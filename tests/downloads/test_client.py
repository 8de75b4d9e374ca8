"""The Python client's ``download`` and the ``xstream get`` command, against a real server:
a verified file, resuming from a partial file and after connections cut by a proxy, a
partial file longer than the content, refusals, and the command as a person runs it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from tests.http.proxy import CuttingProxy
from xstream_server.client import (
    AuthenticationError,
    DownloadResult,
    IntegrityError,
    Progress,
    RequestError,
    RetryPolicy,
    StreamGoneError,
    download,
    download_sync,
    partial_path,
    upload,
)
from xstream_server.identity import issue_token, server_secret
from xstream_server.server import Server

MiB = 1024 * 1024


def address(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


async def stored(server: Server, tmp_path: Path, size: int, **options: str) -> tuple[str, bytes]:
    data = os.urandom(size)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    result = await upload(source, server=address(server), **options)  # type: ignore[arg-type]
    return result.key, data


async def test_download_writes_a_verified_file(server: Server, tmp_path: Path) -> None:
    key, data = await stored(server, tmp_path, 3 * MiB + 1)
    seen: list[Progress] = []
    target = tmp_path / "out" / "copy.bin"
    result = await download(key, target, server=address(server), on_progress=seen.append)
    assert result == DownloadResult(
        key, target, len(data), hashlib.sha256(data).hexdigest(), True, 0, 0
    )
    assert target.read_bytes() == data
    assert not partial_path(target).exists()
    assert seen[-1] == Progress(len(data), len(data), len(data))


async def test_download_resumes_from_a_partial_file(server: Server, tmp_path: Path) -> None:
    key, data = await stored(server, tmp_path, 2 * MiB)
    target = tmp_path / "copy.bin"
    partial_path(target).write_bytes(data[:12345])
    result = await download(key, target, server=address(server))
    assert result.resumed_from == 12345
    assert result.verified
    assert target.read_bytes() == data


async def test_partial_file_longer_than_the_content_starts_afresh(
    server: Server, tmp_path: Path
) -> None:
    key, data = await stored(server, tmp_path, 1000)
    target = tmp_path / "copy.bin"
    partial_path(target).write_bytes(os.urandom(5000))  # 416 on the first pull
    result = await download(key, target, server=address(server))
    assert target.read_bytes() == data
    assert result.size == 1000


async def test_partial_file_of_other_bytes_fails_the_checksum(
    server: Server, tmp_path: Path
) -> None:
    key, _ = await stored(server, tmp_path, 1000)
    target = tmp_path / "copy.bin"
    partial_path(target).write_bytes(b"x" * 10)
    with pytest.raises(IntegrityError):
        await download(key, target, server=address(server))
    assert not target.exists()
    assert not partial_path(target).exists()  # the next run starts afresh
    assert (await download(key, target, server=address(server))).verified


async def test_download_resumes_after_cut_connections(server: Server, tmp_path: Path) -> None:
    key, data = await stored(server, tmp_path, 6 * MiB)
    target = tmp_path / "copy.bin"
    retries: list[int] = []
    async with CuttingProxy(server.port, cut_after=MiB, cuts=3, downstream=True) as proxy:
        result = await download(
            key,
            target,
            server=f"127.0.0.1:{proxy.port}",
            retry=RetryPolicy(initial_delay=0.01),
            on_retry=lambda attempt, delay, error: retries.append(attempt),
        )
    assert result.reconnects == 3 == len(retries)
    assert result.verified
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_download_sync_from_a_script(server: Server, tmp_path: Path) -> None:
    key, data = await stored(server, tmp_path, 100_000)
    target = tmp_path / "copy.bin"
    result = await asyncio.to_thread(download_sync, key, target, server=address(server))
    assert result.verified
    assert target.read_bytes() == data


async def test_refusals_reach_the_caller(server: Server, tmp_path: Path) -> None:
    secret = server_secret(server.settings)
    alice = f"Bearer {issue_token(secret, '@alice')}"
    key, _ = await stored(server, tmp_path, 10, authorization=alice)
    target = tmp_path / "copy.bin"
    with pytest.raises(RequestError) as refused:
        await download(key, target, server=address(server))
    assert refused.value.status == 403
    with pytest.raises(AuthenticationError):
        await download(key, target, server=address(server), authorization="Bearer forged")
    with pytest.raises(StreamGoneError):
        await download("A" * 24, target, server=address(server))
    assert not target.exists()
    owned = await download(key, target, server=address(server), authorization=alice)
    assert owned.size == 10


async def run_xstream(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xstream_server.cli.client",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_get_command_with_a_token_from_the_token_command(
    server: Server, tmp_path: Path
) -> None:
    """As a person would: issue a token, upload with it, get the file back with it."""
    code, token, err = await run_xstream(
        "token", "@alice", "--data-dir", str(server.settings.data_dir)
    )
    assert code == 0, err
    credential = {"XSTREAM_AUTHORIZATION": f"Bearer {token.strip()}"}
    source = tmp_path / "photo.jpg"
    data = os.urandom(MiB + 3)
    source.write_bytes(data)
    state = {"XSTREAM_STATE_DIR": str(tmp_path / "state")}
    code, out, err = await run_xstream(
        "-s", address(server), "upload", str(source), "--json", env={**credential, **state}
    )
    assert code == 0, err
    key = json.loads(out.splitlines()[0])["key"]
    target = tmp_path / "back.jpg"
    code, out, err = await run_xstream(
        "-s", address(server), "get", key, "-o", str(target), env=credential
    )
    assert code == 0, err
    assert target.read_bytes() == data
    assert f"sha256 {hashlib.sha256(data).hexdigest()} (verified)" in out
    # Without the token: 403, exit code 1, and nothing written.
    other = tmp_path / "other.jpg"
    code, out, err = await run_xstream("-s", address(server), "get", key, "-o", str(other))
    assert code == 1
    assert "error 403" in err
    assert not other.exists()
    bearer = credential["XSTREAM_AUTHORIZATION"]
    code, out, err = await run_xstream(
        "-s", address(server), "-A", bearer, "get", key, "-o", str(other), "--json"
    )
    assert code == 0, err
    done = json.loads(out.splitlines()[-1])
    assert (done["event"], done["size"], done["verified"]) == ("done", len(data), True)
