"""The people commands as a person runs them: ``xstream`` child processes against a server
process, tokens in ``XSTREAM_AUTHORIZATION``."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from pathlib import Path
from typing import Any

from xstream_server.client.people import people

from .apps import bearer
from .support import eventually

WAIT = 60.0


async def xstream(
    server: str, who: str, *args: str, stdin: int | None = asyncio.subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    env = {**os.environ, "XSTREAM_AUTHORIZATION": bearer(who), "XSTREAM_SERVER": server}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xstream_server.cli.client",
        *args,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    async with asyncio.timeout(WAIT):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def run(server: str, who: str, *args: str) -> tuple[int, str, str]:
    return await finish(await xstream(server, who, *args))


async def test_send_inbox_accept_deny_online(spawn_server: Any, tmp_path: Path) -> None:
    server = f"127.0.0.1:{spawn_server('--app', 'tests.social.apps:app').port}"
    code, out, _ = await run(server, "@bob", "online", "--register")
    assert code == 0 and out.split() == ["@bob"]
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_bytes(b"a" * 5000)
    second.write_bytes(b"b" * 7000)
    keys = []
    for path in (first, second):
        code, out, err = await run(server, "@alice", "send", str(path), "--to", "@bob", "--no-wait")
        assert code == 0, err
        keys.append(out.split("done ")[1].split()[0])
    code, out, _ = await run(server, "@bob", "inbox", "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["payload"]["key"] for e in events] == keys
    assert {e["type"] for e in events} == {"stream-offer"}
    assert events[0]["sender"] == "@alice" and events[0]["payload"]["name"] == "a.txt"
    code, out, _ = await run(server, "@bob", "accept", keys[0], "-o", str(tmp_path / "got"))
    assert code == 0 and out.splitlines()[0] == f"accepted {keys[0]}"
    assert (tmp_path / "got").read_bytes() == first.read_bytes()
    code, out, _ = await run(server, "@bob", "deny", keys[1], "--reason", "too big")
    assert (code, out.strip()) == (0, f"denied {keys[1]}")
    code, _, err = await run(server, "@carol", "accept", keys[0])
    assert code == 1 and "403" in err
    code, out, _ = await run(server, "@alice", "users", "@bob", "@carol")
    assert out.split() == ["@bob"]


async def test_two_terminals_monitor_and_send(spawn_server: Any, tmp_path: Path) -> None:
    """The whole story: @bob runs ``xstream monitor --accept-from @alice``, @alice runs
    ``xstream send``; the file arrives whole and ``send`` says accepted and received."""
    server = f"127.0.0.1:{spawn_server('--app', 'tests.social.apps:app').port}"
    path = tmp_path / "report.pdf"
    path.write_bytes(os.urandom(300_000))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monitor = await xstream(
        server, "@bob", "monitor", "--accept-from", "@alice", "--dir", str(inbox)
    )
    try:
        async with await people(server, authorization=bearer("@alice")) as alice:
            await eventually(lambda: alice.online(["@bob"]), bool, WAIT)
        code, out, err = await run(server, "@alice", "send", str(path), "--to", "@bob")
        assert code == 0, err
        key = out.split("done ")[1].split()[0]
        # Each notification is told once (during the upload, or after it).
        assert out.count(f"@bob accepted {key}") == 1, out
        assert out.count(f"@bob received all 300000 bytes of {key}") == 1, out
        assert (inbox / "report.pdf").read_bytes() == path.read_bytes()
    finally:
        monitor.terminate()
        _, said, _ = await finish(monitor)
    assert f"received {key} -> " in said


async def test_monitor_ask_answered_no_on_its_terminal(spawn_server: Any, tmp_path: Path) -> None:
    server = f"127.0.0.1:{spawn_server('--app', 'tests.social.apps:app').port}"
    controller, terminal = pty.openpty()
    try:
        monitor = await xstream(server, "@bob", "monitor", "--ask", stdin=terminal)
        # @bob is online once the monitor runs: an addressee.
        async with await people(server, authorization=bearer("@alice")) as alice:
            await eventually(lambda: alice.online(["@bob"]), bool, WAIT)
            path = tmp_path / "x.bin"
            path.write_bytes(b"x" * 3000)
            sender = await xstream(server, "@alice", "send", str(path), "--to", "@bob")
            assert monitor.stderr is not None
            said = b""
            async with asyncio.timeout(WAIT):
                while b"[y/n]" not in said:
                    said += await monitor.stderr.read(256)
            os.write(controller, b"n\n")
            code, out, err = await finish(sender)
        assert code == 1, err
        assert "@bob denied" in out and "declined" in out
        monitor.terminate()
        await finish(monitor)
    finally:
        os.close(controller)
        os.close(terminal)
