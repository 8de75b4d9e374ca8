"""The ``xstream`` command as a user runs it: a child process against the real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerFactory
from xstream_server import App, CompletedUpload, RequestContext, RouteError, Status, StreamOffer
from xstream_server.client.resume_state import FileIdentity, ResumeStore
from xstream_server.server import Server

from .conftest import ProxyFactory, RandomFile

MiB = 1024 * 1024
WAIT = 60.0  # bound on any single wait for the child


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        """The JSON lines of ``--json`` output."""
        return [json.loads(line) for line in self.stdout.splitlines()]


class Cli:
    """Runs ``python -m xstream_server.cli.client`` with a private state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.env = {**os.environ, "XSTREAM_STATE_DIR": str(state_dir)}

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "xstream_server.cli.client",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )

    async def run(self, *args: str) -> Finished:
        return await self.finish(await self.start(*args))

    @staticmethod
    async def finish(process: asyncio.subprocess.Process) -> Finished:
        async with asyncio.timeout(WAIT):
            out, err = await process.communicate()
        assert process.returncode is not None
        return Finished(process.returncode, out.decode(), err.decode())

    @staticmethod
    async def read_event(process: asyncio.subprocess.Process) -> dict[str, Any]:
        assert process.stdout is not None
        async with asyncio.timeout(WAIT):
            line = await process.stdout.readline()
        assert line, "the command ended before printing an event"
        event: dict[str, Any] = json.loads(line)
        return event


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "state")


def address(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


async def test_upload_prints_key_first_then_the_result(
    server: Server, cli: Cli, random_file: RandomFile, tmp_path: Path
) -> None:
    path, digest = random_file(3 * MiB)
    done = await cli.run("--json", "upload", str(path), "--server", address(server))
    assert done.code == 0, done.stderr
    key_event, final = done.events
    assert key_event == {"event": "key", "key": key_event["key"], "resumed": False}
    assert final["event"] == "done"
    assert final["key"] == key_event["key"]
    assert (final["size"], final["sha256"], final["resumed_from"]) == (3 * MiB, digest, 0)
    assert final["payload"]["name"] == path.name
    # A finished upload leaves nothing to resume.
    state = json.loads((tmp_path / "state" / "uploads.json").read_text())
    assert state["uploads"] == []


async def test_human_and_quiet_output(server: Server, cli: Cli, random_file: RandomFile) -> None:
    path, digest = random_file(MiB)
    human = await cli.run("upload", str(path), "-s", address(server))
    assert human.code == 0, human.stderr
    assert human.stdout.splitlines()[0].startswith("key ")
    assert f"sha256  {digest}" in human.stdout
    quiet = await cli.run("upload", "--fresh", "-q", str(path), "-s", address(server))
    assert quiet.code == 0, quiet.stderr
    assert len(quiet.stdout.split()) == 1  # just the key
    assert quiet.stderr == ""


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
async def test_interrupted_upload_resumes_when_run_again(
    server: Server,
    make_proxy: ProxyFactory,
    cli: Cli,
    random_file: RandomFile,
    stop: signal.Signals,
) -> None:
    size = 40 * MiB
    path, digest = random_file(size)
    # The first connection goes silent after 6 MiB, so the command is surely mid-upload
    # when it is stopped; later connections pass.
    proxy = await make_proxy(server.port, stalls=[6 * MiB])
    command = ("--json", "upload", str(path), "--server", proxy.address, "--retry-delay", "0.01")

    first = await cli.start(*command)
    granted = await cli.read_event(first)
    assert granted["event"] == "key"
    async with asyncio.timeout(WAIT):
        await proxy.stalled.wait()
    first.send_signal(stop)
    stopped = await cli.finish(first)
    if stop == signal.SIGINT:
        assert stopped.code == 130
        assert stopped.events[-1]["event"] == "interrupted"
        assert stopped.events[-1]["key"] == granted["key"]
        assert "run the same command again" in stopped.stderr
    else:
        assert stopped.code == -signal.SIGKILL

    # `status` finds the server from the local state and asks it.
    status = await cli.run("--json", "status", granted["key"])
    assert status.code == 0, status.stderr
    (info,) = status.events
    assert info["source"] == "server"
    assert (info["key"], info["route"], info["total"]) == (granted["key"], "/upload-file", size)
    assert info["state"] == "active"
    assert 0 <= info["offset"] <= 6 * MiB

    again = await cli.run(*command)
    assert again.code == 0, again.stderr
    resumed, final = again.events
    assert resumed == {"event": "key", "key": granted["key"], "resumed": True}
    assert final["key"] == granted["key"]
    assert final["sha256"] == digest
    assert 0 < final["resumed_from"] <= 6 * MiB  # resumed, not restarted
    assert proxy.connections == 3  # the stalled upload, `status`, the resumed upload


async def test_request_command(server: Server, cli: Cli) -> None:
    echo = await cli.run(
        "request", "/echo", "--payload-json", '{"a": [1, 2]}', "-s", address(server)
    )
    assert echo.code == 0, echo.stderr
    assert json.loads(echo.stdout) == {"a": [1, 2]}
    # --json is the output mode, before the command as after it, as for every command.
    for args in (("--json", "request", "/echo"), ("request", "/echo", "--json")):
        whole = await cli.run(*args, "--payload-json", "[3]", "-s", address(server))
        assert whole.code == 0, whole.stderr
        assert whole.events[0]["status"] == 0
        assert whole.events[0]["payload"] == [3]
    text = await cli.run("request", "/echo", "--payload-text", "hi", "-s", address(server))
    assert text.code == 1  # sent as text, which /echo refuses
    assert "error 400: /echo takes data-format: json" in text.stderr


async def test_request_json_payload_spelling_of_earlier_versions_is_a_usage_error(
    server: Server, cli: Cli
) -> None:
    old = await cli.run("request", "/echo", "--json", '{"a": 1}', "-s", address(server))
    assert old.code == 2
    assert "--payload-json" in old.stderr
    assert old.stdout == ""
    both = await cli.run(
        "request", "/echo", "--payload-json", "1", "--payload-text", "x", "-s", address(server)
    )
    assert both.code == 2
    assert "at most one" in both.stderr
    stray = await cli.run("request", "/echo", "extra", "-s", address(server))
    assert stray.code == 2
    assert "'extra'" in stray.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_exit_codes(server: Server, cli: Cli, random_file: RandomFile) -> None:
    path, _ = random_file(1000)
    missing = await cli.run("request", "/no-such-route", "-s", address(server))
    assert missing.code == 1
    assert "404" in missing.stderr
    refused = await cli.run("upload", str(path), "--route", "/echo", "-s", address(server))
    assert refused.code == 1
    assert "405" in refused.stderr
    usage = await cli.run("request", "/echo", "--payload-json", "{not json")
    assert usage.code == 2
    no_file = await cli.run("upload", str(path) + ".missing")
    assert no_file.code == 2
    bad_header = await cli.run("upload", str(path), "-H", "bad name=x", "-s", address(server))
    assert bad_header.code == 2
    assert "bad name" in bad_header.stderr
    unreachable = await cli.run(
        "--json",
        "upload",
        str(path),
        "-s",
        f"127.0.0.1:{free_port()}",
        "--retries",
        "2",
        "--retry-delay",
        "0.001",
    )
    assert unreachable.code == 3
    assert unreachable.events[-1]["event"] == "error"
    assert unreachable.events[-1]["exit_code"] == 3


async def test_status_of_an_unknown_key(server: Server, cli: Cli) -> None:
    unknown = await cli.run("status", "A" * 24, "-s", address(server))
    assert unknown.code == 1
    assert "410" in unknown.stderr


async def test_status_falls_back_to_the_local_state_when_the_server_is_away(
    server: Server, make_proxy: ProxyFactory, cli: Cli, random_file: RandomFile
) -> None:
    path, _ = random_file(8 * MiB)
    proxy = await make_proxy(server.port, stalls=[MiB])
    upload = await cli.start("--json", "upload", str(path), "-s", proxy.address)
    granted = await cli.read_event(upload)
    upload.send_signal(signal.SIGKILL)
    await cli.finish(upload)
    saved_server = proxy.address
    await proxy.close()  # the server the state file names is now unreachable

    status = await cli.run("--json", "status", granted["key"])
    assert status.code == 3
    local, error = status.events
    assert local["source"] == "local"
    assert (local["key"], local["server"], local["route"]) == (
        granted["key"],
        saved_server,
        "/upload-file",
    )
    assert local["file"]["size"] == 8 * MiB
    assert error["event"] == "error"


async def test_an_expired_saved_key_starts_over(
    server: Server, cli: Cli, random_file: RandomFile, tmp_path: Path
) -> None:
    path, digest = random_file(MiB)
    stale = "S" * 24  # a key the server does not know (expired, or another server's)
    store = ResumeStore(tmp_path / "state")
    store.save(store.new_entry(stale, address(server), "/upload-file", FileIdentity.of(path)))

    done = await cli.run("--json", "upload", str(path), "-s", address(server))
    assert done.code == 0, done.stderr
    resumed, restart, fresh, final = done.events
    assert resumed == {"event": "key", "key": stale, "resumed": True}
    assert (restart["event"], restart["key"], restart["status"]) == ("restart", stale, 410)
    assert fresh["key"] != stale and fresh["resumed"] is False
    assert (final["key"], final["sha256"], final["resumed_from"]) == (fresh["key"], digest, 0)
    assert store.entries() == []


def private_app() -> App:
    """Routes that want ``authorization: Bearer s3cret`` and know its holder as alice."""

    async def auth(header: str | None) -> str:
        if header != "Bearer s3cret":
            raise RouteError(Status.UNAUTHORIZED, "who are you?")
        return "alice"

    app = App()

    @app.request("/whoami", auth=auth)
    async def whoami(request: RequestContext) -> str:
        return f"you are {request.principal}"

    @app.stream("/private", auth=auth)
    async def private(upload: CompletedUpload) -> dict[str, Any]:
        return {"owner": upload.principal, "size": upload.size}

    return app


async def test_authorization_for_upload_status_and_request(
    make_server: ServerFactory, cli: Cli, random_file: RandomFile
) -> None:
    path, _ = random_file(100_000)
    async with make_server(app=private_app()) as running:
        where = ("-s", address(running))
        refused = await cli.run("upload", str(path), "--route", "/private", *where)
        assert refused.code == 1
        assert "401" in refused.stderr
        done = await cli.run(
            "--json", "-A", "Bearer s3cret", "upload", str(path), "--route", "/private", *where
        )
        assert done.code == 0, done.stderr
        key = done.events[0]["key"]
        assert done.events[-1]["payload"] == {"owner": "alice", "size": 100_000}
        # From the environment, as a script keeps a token out of the process list.
        cli.env["XSTREAM_AUTHORIZATION"] = "Bearer s3cret"
        status = await cli.run("--json", "status", key, *where)
        assert status.code == 0, status.stderr
        assert (status.events[0]["state"], status.events[0]["offset"]) == ("complete", 100_000)
        whoami = await cli.run("request", "/whoami", *where)
        assert (whoami.code, whoami.stdout) == (0, "you are alice\n")
        del cli.env["XSTREAM_AUTHORIZATION"]
        anonymous = await cli.run("request", "/whoami", *where)
        assert anonymous.code == 1
        assert "401" in anonymous.stderr


async def test_ctrl_c_during_negotiation_ends_the_command_at_once(
    make_server: ServerFactory, cli: Cli, random_file: RandomFile
) -> None:
    """The server has not answered the stream request yet (its accept hook is slow) when the
    user presses Ctrl-C: the command stops at once, not after a timeout."""
    path, _ = random_file(10_000)
    asked = asyncio.Event()
    release = asyncio.Event()
    app = App()

    async def slow(offer: StreamOffer) -> None:
        asked.set()
        await release.wait()

    @app.stream("/slow", accept=slow)
    async def done(upload: CompletedUpload) -> None:
        return None

    async with make_server(app=app) as running:
        process = await cli.start("upload", str(path), "--route", "/slow", "-s", address(running))
        async with asyncio.timeout(WAIT):
            await asked.wait()
        interrupted = asyncio.get_running_loop().time()
        process.send_signal(signal.SIGINT)
        finished = await cli.finish(process)
        took = asyncio.get_running_loop().time() - interrupted
        release.set()
    assert finished.code == 130, finished.stderr
    assert "SIGINT" in finished.stderr
    assert took < 5, took  # not the 10 s of a clean close that waits for the reply
