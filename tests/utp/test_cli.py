"""``xstream --transport utp``: the CLI as a child process against a server on a uTP port,
and streams that a killed command began on one transport and the next command resumes on
the other."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.client.conftest import CuttingProxy
from tests.conftest import ServerFactory
from tests.durability.support import until
from xstream_server.client import Upload, UploadAborted, upload
from xstream_server.client.resume_state import FileIdentity, ResumeStore
from xstream_server.engine import StreamStatus
from xstream_server.server import Server

from .conftest import random_file, utp_address
from .relay import start_relay

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
    lines = out.decode().splitlines() if "--json" in args else []  # else: for people
    events = [json.loads(line) for line in lines]
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
        "--payload-json",
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


@pytest.fixture
async def checkpointing_server(make_server: ServerFactory) -> AsyncIterator[Server]:
    """TCP and uTP; a checkpoint every MiB, so that a killed upload has a stored prefix."""
    async with make_server(utp_port=0, checkpoint_bytes=MiB) as running:
        yield running


def tcp_address(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


async def stored_offset(server: Server, key: str) -> int:
    assert server.engine is not None
    found = await server.engine.status(key)
    assert isinstance(found, StreamStatus), found
    return found.offset


async def kill_once_stored(process: asyncio.subprocess.Process, server: Server) -> str:
    """Read the key the command prints, wait until the server has stored 1 MiB of the
    stream, then kill -9 the command; the key."""
    assert process.stdout is not None
    async with asyncio.timeout(60):
        key_event = json.loads(await process.stdout.readline())
        assert key_event == {"event": "key", "key": key_event["key"], "resumed": False}
        key = str(key_event["key"])

        async def stored_some() -> bool:
            return await stored_offset(server, key) >= MiB

        await until(stored_some)  # the durable offset is announced to nobody here
    process.kill()  # -9: nothing saved on the way out, no FIN on either transport
    await process.wait()
    return key


@contextlib.asynccontextmanager
async def silent_after(transport: str, server: Server, forwarded: int) -> AsyncIterator[str]:
    """An address in front of the server's ``transport`` port that forwards about
    ``forwarded`` bytes from the client, then goes silent: the upload cannot end before
    the kill."""
    if transport == "tcp":
        proxy = await CuttingProxy(server.port, stalls=[forwarded]).start()
        try:
            yield proxy.address
        finally:
            await proxy.close()
    else:
        assert server.utp_port is not None
        relay_transport, _ = await start_relay(
            ("127.0.0.1", server.utp_port), 1, 0.0, stall_after=forwarded // 1400
        )
        try:
            yield f"127.0.0.1:{relay_transport.get_extra_info('sockname')[1]}"
        finally:
            relay_transport.close()


@pytest.mark.parametrize(
    ("first", "then"), [("utp", "tcp"), ("tcp", "utp")], ids=["utp-then-tcp", "tcp-then-utp"]
)
async def test_a_cli_upload_killed_on_one_transport_resumes_on_the_other(
    checkpointing_server: Server, tmp_path: Path, first: str, then: str
) -> None:
    server = checkpointing_server
    size = 8 * MiB
    path, digest = random_file(tmp_path, size)
    state = tmp_path / "state"
    async with silent_after(first, server, 3 * MiB) as address:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "xstream_server.cli.client",
            "--json",
            "upload",
            str(path),
            "--transport",
            first,
            "-s",
            address,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "XSTREAM_STATE_DIR": str(state)},
        )
        key = await kill_once_stored(process, server)
    stored = await stored_offset(server, key)
    assert MiB <= stored < size

    # The same command on the other transport, straight to the server (same host, another
    # port): no key given, the saved one is found.
    other = tcp_address(server) if then == "tcp" else utp_address(server)
    code, events, err = await xstream(
        state, "--json", "upload", str(path), "--transport", then, "-s", other
    )
    assert code == 0, err
    assert events[0] == {"event": "key", "key": key, "resumed": True}
    assert events[-1]["event"] == "done"
    assert events[-1]["key"] == key
    assert events[-1]["sha256"] == digest
    assert events[-1]["resumed_from"] >= stored
    assert ResumeStore(state).entries() == []  # finished: nothing left to resume


async def test_a_key_the_server_does_not_know_starts_a_new_upload_with_a_note(
    utp_server: Server, tmp_path: Path
) -> None:
    path, digest = random_file(tmp_path, 300_000)
    state = tmp_path / "state"
    store = ResumeStore(state)
    # Saved for the same host on another port (say another server there, or an expired one).
    stale = "S" * 24
    identity = FileIdentity.of(path)
    store.save(store.new_entry(stale, "127.0.0.1:9", "/upload-file", identity, "tcp"))
    code, events, err = await xstream(
        state, "--json", "upload", str(path), "--transport", "utp", "-s", utp_address(utp_server)
    )
    assert code == 0, err
    assert events[0] == {"event": "key", "key": stale, "resumed": True}
    assert events[1]["event"] == "restart"
    assert (events[1]["key"], events[1]["status"]) == (stale, 410)
    assert events[-1]["sha256"] == digest
    assert events[-1]["key"] != stale
    # The entry of the other address is not this server's to drop.
    assert [e.key for e in store.entries()] == [stale]

    # Without --json, the note says what happened; --key names a stream outright.
    code, events, err = await xstream(
        state, "upload", str(path), "--key", "U" * 24, "-s", f"127.0.0.1:{utp_server.port}"
    )
    assert code == 0, err
    assert f"does not resume key {'U' * 24}" in err
    assert "410" in err
    assert "starting a new upload" in err


async def test_upload_key_option_resumes_a_stream_begun_elsewhere(
    checkpointing_server: Server, tmp_path: Path
) -> None:
    path, digest = random_file(tmp_path, 3 * MiB)
    uploaded = await upload(path, server=utp_address(checkpointing_server), transport="utp")
    # A finished stream resumed by key repeats its result (PROTOCOL 3.4), on any transport.
    code, events, err = await xstream(
        tmp_path / "state",
        "--json",
        "upload",
        str(path),
        "--key",
        uploaded.key,
        "-s",
        tcp_address(checkpointing_server),
    )
    assert code == 0, err
    assert events[0] == {"event": "key", "key": uploaded.key, "resumed": True}
    assert events[-1]["sha256"] == digest
    assert events[-1]["resumed_from"] == 3 * MiB
    both = await xstream(tmp_path / "state", "upload", str(path), "--key", "K", "--fresh")
    assert both[0] == 2
    assert "not both" in both[2]


async def test_the_library_resumes_over_utp_a_stream_begun_over_tcp(
    checkpointing_server: Server, tmp_path: Path
) -> None:
    server = checkpointing_server
    path, digest = random_file(tmp_path, 6 * MiB)
    keys: list[str] = []
    async with silent_after("tcp", server, 3 * MiB) as address:
        first = Upload(path, server=address, on_key=keys.append, stall_timeout=60)
        running = asyncio.create_task(first.run())

        async def stored_some() -> bool:
            return bool(keys) and await stored_offset(server, keys[0]) >= MiB

        async with asyncio.timeout(60):
            await until(stored_some)  # nothing announces the durable offset
        first.abort()
        with pytest.raises(UploadAborted):
            await running
    stored = await stored_offset(server, keys[0])
    result = await upload(path, server=utp_address(server), transport="utp", key=keys[0])
    assert (result.key, result.sha256) == (keys[0], digest)
    assert result.resumed_from >= stored >= MiB


async def test_status_of_a_saved_key_asks_over_the_transport_it_was_begun_on(
    utp_server: Server, tmp_path: Path
) -> None:
    path, _ = random_file(tmp_path, 200_000)
    uploaded = await upload(path, server=utp_address(utp_server), transport="utp")
    state = tmp_path / "state"
    store = ResumeStore(state)
    identity = FileIdentity.of(path)
    store.save(
        store.new_entry(uploaded.key, utp_address(utp_server), "/upload-file", identity, "utp")
    )
    code, events, err = await xstream(state, "--json", "status", uploaded.key)
    assert code == 0, err
    assert events[0]["source"] == "server"
    assert (events[0]["state"], events[0]["offset"]) == ("complete", 200_000)
