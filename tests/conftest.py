"""Shared fixtures: a real Redis server for the session, xstream servers in-process and as
child processes, each on loopback with its own data directory."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import uvloop

from xstream_server.app import App
from xstream_server.embedded_redis import find_redis_server
from xstream_server.server import Server
from xstream_server.settings import ServerSettings

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (10000 higher) is free too."""
    for _ in range(100):
        port = random.randrange(20000, 55535)
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisProcess:
    """A real redis-server child process on a loopback port, restartable on the same port
    and data: the tests' "external" Redis (the embedded one has no TCP listener)."""

    def __init__(
        self, directory: Path, port: int | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        self.directory = directory
        self.port = port or _free_port()
        self.extra = extra  # more redis-server options
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """Durable as an external Redis must be (``appendfsync always``), logging to stdout."""
        return [
            find_redis_server(),
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
            *("--daemonize", "no", "--logfile", ""),
            *self.extra,
        ]

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        output = self.process.stdout
        assert output is not None
        lines: list[str] = []
        for line in output:  # redis logs this line once it accepts connections
            lines.append(line)
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError("redis-server exited at start-up:\n" + "".join(lines))

        def drain() -> None:  # keep the pipe from filling up; close it when redis exits
            with output:
                output.read()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, signum: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            self.process.wait(10)
            self._drain.join(10)


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path_factory.mktemp("redis"))
    process.start()
    yield process
    process.stop()


@pytest.fixture
def redis_url(redis_process: RedisProcess) -> str:
    """The session's Redis, emptied for each test."""
    client = redis.Redis.from_url(redis_process.url)
    client.flushall()
    client.close()
    return redis_process.url


class RedisClusterProcesses:
    """A real Redis Cluster of redis-server processes in cluster mode, the hash slots split
    between the masters and the nodes introduced to each other (CLUSTER ADDSLOTS, MEET and
    REPLICATE through redis-py, no redis-cli). By default 3 masters and no replicas: most
    tests need the slot routing and the cross-slot rules, not failover. With ``replicas=1``
    each master gets a replica, and a short ``node_timeout`` makes a failover quick."""

    def __init__(
        self, directory: Path, masters: int = 3, replicas: int = 0, node_timeout: int = 5000
    ) -> None:
        self.masters = masters
        self.nodes = [
            RedisProcess(
                directory / f"node{n}",
                _free_cluster_port(),
                extra=(
                    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                    *("--cluster-node-timeout", str(node_timeout), "--appendfsync", "no"),
                ),
            )
            for n in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        try:
            self._form()
        except BaseException:
            self.stop()
            raise

    def _form(self) -> None:
        for node in self.nodes:
            node.start()
        clients = [redis.Redis(port=node.port) for node in self.nodes]
        try:
            share = 16384 // self.masters
            for n, client in enumerate(clients[: self.masters]):
                last = 16383 if n == self.masters - 1 else (n + 1) * share - 1
                client.cluster("ADDSLOTS", *range(n * share, last + 1))
            for node in self.nodes[1:]:
                clients[0].cluster("MEET", "127.0.0.1", node.port)
            # Gossip announces nothing: poll until every node sees the whole cluster.
            _poll(lambda: all(_cluster_ok(c, len(clients)) for c in clients), "form")
            ids = [client.cluster("MYID") for client in clients[: self.masters]]
            for n, client in enumerate(clients[self.masters :]):
                client.cluster("REPLICATE", _text(ids[n % self.masters]))
            if len(clients) > self.masters:
                _poll(lambda: all(_replicas_ready(c, self.masters) for c in clients), "replicate")
        finally:
            for client in clients:
                client.close()

    def flush(self) -> None:
        for node in self.nodes[: self.masters]:
            client = redis.Redis(port=node.port)
            client.flushall()
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _poll(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Redis Cluster did not {what} in {seconds:g} s")
        time.sleep(0.05)


def _cluster_ok(client: redis.Redis, nodes: int) -> bool:
    info = client.cluster("INFO")
    return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == nodes)


def _replicas_ready(client: redis.Redis, masters: int) -> bool:
    """This node sees every replica as one, and a replica's link to its master is up."""
    nodes = client.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
    lines = _text(nodes).splitlines()
    replicas = sum(1 for line in lines if "slave" in line.split()[2].split(","))
    if replicas != len(lines) - masters:
        return False
    info = client.info("replication")
    return info["role"] == "master" or info.get("master_link_status") == "up"


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    cluster = RedisClusterProcesses(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


ServerFactory = Callable[..., AbstractAsyncContextManager[Server]]


@pytest.fixture
def make_server(redis_url: str, tmp_path: Path) -> ServerFactory:
    """``async with make_server(app=..., **settings) as server`` runs a server in this
    process on a free loopback port (default app: ``handlers:app``)."""

    @asynccontextmanager
    async def start(app: App | None = None, **overrides: Any) -> AsyncIterator[Server]:
        if app is None:
            from handlers import app as default_app

            app = default_app
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "http_port": 0,
            "data_dir": tmp_path / "data",
            "redis_url": redis_url,
        }
        options.update(overrides)
        server = Server(app, ServerSettings(**options))
        await server.start()
        try:
            yield server
        finally:
            await server.close()

    return start


@pytest.fixture
async def server(make_server: ServerFactory) -> AsyncIterator[Server]:
    async with make_server() as running:
        yield running


_LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")


class ServerProcess:
    """``xstream-server`` as a child process; its log is kept for failure reports."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        cwd: Path = REPO,
        command: list[str] | None = None,
    ) -> None:
        # The program: ``python -m xstream_server.cli.server`` unless ``command`` is given.
        self.command = command or [sys.executable, "-m", "xstream_server.cli.server"]
        self.args = args
        self.env = env
        self.cwd = cwd
        self.port = 0
        self.log: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 20.0) -> ServerProcess:
        ready = threading.Event()
        self.process = subprocess.Popen(
            [*self.command, *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=self.cwd,
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

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout)


SpawnServer = Callable[..., ServerProcess]


@pytest.fixture
def spawn_server(redis_url: str, tmp_path: Path) -> Iterator[SpawnServer]:
    """``spawn_server(*flags, env={...}, data_dir=..., redis_url=...)`` starts
    ``xstream-server`` on a free port; every one started is killed at teardown."""
    started: list[ServerProcess] = []

    def spawn(
        *flags: str,
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        redis: str | None = redis_url,
    ) -> ServerProcess:
        args = ["--host", "127.0.0.1", "--port", "0", "--http-port", "0"]
        args += ["--data-dir", str(data_dir or tmp_path / "data")]
        if redis is not None:
            args += ["--redis-url", redis]
        environment = {**os.environ, **(env or {})}
        process = ServerProcess([*args, *flags], environment).start()
        started.append(process)
        return process

    yield spawn
    for process in started:
        process.kill()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests run on uvloop, the loop the server runs on in production."""
    return {"uvloop": uvloop.new_event_loop}
