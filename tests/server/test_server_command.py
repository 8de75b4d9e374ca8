"""The commands as an adopter runs them in the first hour (issue 14): ``xstream-server``
finds ``--app mymodule:app`` in the directory it starts from (or ``--app-dir``), a bad
setting of the default app stops it at start with a clear message, and usage errors
(``--log-level foo``, a port in use, ``xstream upload --buffer-size 0``) end with a usage
message and an exit code, not a traceback."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.wire import Wire, status

BIN = Path(sys.executable).parent
SERVER = str(BIN / "xstream-server")
CLIENT = str(BIN / "xstream")
WAIT = 30.0

MODULE = """
from xstream_server import App, RequestContext

app = App()


@app.request("/hello")
async def hello(request: RequestContext) -> str:
    return "hello from mymodule"
"""


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end (these all end at once, before serving anything)."""
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def server_args(redis_url: str, data: Path, *flags: str) -> list[str]:
    return [
        SERVER,
        "--host",
        "127.0.0.1",
        "--redis-url",
        redis_url,
        "--data-dir",
        str(data),
        *flags,
    ]


async def serve_and_ask(args: list[str], cwd: Path) -> str:
    """Start the server, send ``/hello`` once it listens, return the reply's payload."""
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(WAIT):
            while not (found := re.search(r"listening on [\d.]+:(\d+)", "".join(log))):
                line = await process.stderr.readline()
                assert line, "server exited:\n" + "".join(log)
                log.append(line.decode())
            async with await Wire.connect(int(found.group(1))) as wire:
                reply = await wire.request({"route": "/hello"})
        assert status(reply) == 0, reply.headers
        return reply.payload.decode()
    finally:
        process.terminate()
        await process.wait()


async def test_app_module_in_the_current_directory(redis_url: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "mymodule.py").write_text(MODULE)
    args = server_args(redis_url, tmp_path / "data", "--port", "0", "--app", "mymodule:app")
    assert await serve_and_ask(args, cwd=project) == "hello from mymodule"


async def test_app_dir_names_where_the_app_module_is(redis_url: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "mymodule.py").write_text(MODULE)
    args = server_args(
        redis_url, tmp_path / "data", "--port", "0", "--app", "mymodule:app", "--app-dir", "project"
    )
    assert await serve_and_ask(args, cwd=tmp_path) == "hello from mymodule"


@pytest.mark.parametrize("window", ["abc", "0", "-5", "1.5MiB"])
def test_a_bad_upload_window_stops_the_default_app_at_start(
    redis_url: str, tmp_path: Path, window: str
) -> None:
    env = {**os.environ, "XSTREAM_UPLOAD_WINDOW": window}
    # From the repository, where the default app (handlers/) lives.
    repo = Path(__file__).resolve().parents[2]
    done = run(*server_args(redis_url, tmp_path / "data", "--port", "0"), cwd=repo, env=env)
    assert done.returncode == 1, done.stderr
    assert (
        f"XSTREAM_UPLOAD_WINDOW must be a positive number of bytes, not {window!r}" in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_an_unknown_log_level_is_a_usage_error(redis_url: str, tmp_path: Path) -> None:
    done = run(*server_args(redis_url, tmp_path / "data", "--log-level", "foo"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Invalid value for --log-level: 'foo' is not one of DEBUG" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_reported_without_a_traceback(redis_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run(*server_args(redis_url, tmp_path / "data", "--port", str(port)), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"Error: cannot listen on 127.0.0.1:{port}: " in done.stderr
    assert "in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_upload_buffer_size_zero_is_a_usage_error(tmp_path: Path) -> None:
    source = tmp_path / "file.bin"
    source.write_bytes(b"x" * 100)
    done = run(CLIENT, "upload", "--buffer-size", "0", str(source), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Invalid value for '--buffer-size': 0 is not in the range x>=1" in done.stderr
    assert "Traceback" not in done.stderr
