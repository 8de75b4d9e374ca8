"""Fixtures of the durability tests.

``spawn_server`` is redefined here: the shared one runs ``python -m xstream_server.cli.server``,
and that module has no ``__main__`` block, so the child exits at once without serving. This
one calls the command's ``main`` the way the installed ``xstream-server`` script does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import _LISTENING, REPO, ServerProcess, SpawnServer
from tests.durability.support import Link

_MAIN = "import sys; from xstream_server.cli.server import main; sys.exit(main())"


class ChildServer(ServerProcess):
    def start(self, timeout: float = 20.0) -> ChildServer:
        ready = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _MAIN, *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=REPO,
        )
        stderr = self.process.stderr
        assert stderr is not None

        def drain() -> None:
            with stderr:
                for line in stderr:
                    self.log.append(line)
                    match = _LISTENING.search(line)
                    if match:
                        self.port = int(match.group(2))
                        ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(timeout) or not self.port:
            self.kill()
            raise RuntimeError("xstream-server did not start:\n" + "".join(self.log))
        return self


@pytest.fixture
def spawn_server(redis_url: str, tmp_path: Path) -> Iterator[SpawnServer]:
    """``spawn_server(*flags, env=..., data_dir=..., redis=...)`` starts ``xstream-server`` on
    a free loopback port; every one started is killed at teardown."""
    started: list[ServerProcess] = []

    def spawn(
        *flags: str,
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        redis: str | None = redis_url,
    ) -> ServerProcess:
        args = ["--host", "127.0.0.1", "--port", "0"]
        args += ["--data-dir", str(data_dir or tmp_path / "data")]
        if redis is not None:
            args += ["--redis-url", redis]
        process = ChildServer([*args, *flags], {**os.environ, **(env or {})}).start()
        started.append(process)
        return process

    yield spawn
    for process in started:
        process.kill()


Connect = Callable[[int], Awaitable[Link]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """``await connect(port)``: a ``Link`` to a server, aborted at teardown if still open."""
    links: list[Link] = []

    async def open_link(port: int) -> Link:
        link = await Link.connect(port)
        links.append(link)
        return link

    yield open_link
    for link in links:
        link.abort()
    for link in links:
        await link.wait_closed(5)
