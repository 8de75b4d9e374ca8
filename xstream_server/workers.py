"""``xstream-server --workers N``: N server processes on the same ports, under a supervisor.

The supervisor serves nothing itself. It starts the embedded Redis once (unless a Redis is
named), settles the ports (a ``0`` becomes one free port, held for the workers), then runs N
copies of the server command as workers. Each worker binds the TCP and HTTP ports with
SO_REUSEPORT, so the kernel spreads new connections over them; all of them share Redis and
the data directory, which is all a stream needs to resume or be taken over on any of them.
uTP, whose connections are tied to one UDP socket, is served by worker 0 alone.

A worker that dies is started again (after a pause that grows while it keeps dying young);
SIGTERM or SIGINT asks every worker to drain as one server does, then stops the Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Final

from .embedded_redis import EmbeddedRedis, _child_setup, redact_url
from .metrics import MultiprocessDirectory
from .private import private_directory
from .settings import ServerSettings

__all__ = ["WORKER_ENV", "Supervisor", "WorkerStartFailed", "report_ready", "worker_overrides"]

log = logging.getLogger("xstream.workers")

# Set by the supervisor in each worker's environment: JSON with the worker's index, the
# file descriptor to report readiness on, and settings that override the command line's.
WORKER_ENV: Final = "XSTREAM_WORKER"
_MIN_RESTART_DELAY: Final = 0.5
_MAX_RESTART_DELAY: Final = 10.0
_YOUNG: Final = 5.0  # a worker that dies sooner than this after starting is crash-looping


class WorkerStartFailed(RuntimeError):
    """A worker exited before it was ready (its own error is on stderr above)."""


def worker_overrides() -> tuple[int, int | None, dict[str, Any]] | None:
    """In a worker: (index, readiness fd, settings overrides); None in a plain server."""
    raw = os.environ.pop(WORKER_ENV, None)
    if raw is None:
        return None
    spec = json.loads(raw)
    return int(spec["index"]), spec.get("ready_fd"), dict(spec["settings"])


def report_ready(fd: int | None) -> None:
    """Tell the supervisor this worker serves."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.write(fd, b"1")
            os.close(fd)


def _reserve_tcp_port(host: str, port: int) -> socket.socket:
    """A socket bound with SO_REUSEPORT, never listening: it keeps a port picked by the
    kernel for the workers (who bind it the same way) and takes no connection itself."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _free_udp_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: int = 0
    delay: float = _MIN_RESTART_DELAY
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, settings: ServerSettings, argv: list[str]) -> None:
        self.settings = settings
        self.argv = argv  # the command line's options, given again to every worker
        self.embedded_redis: EmbeddedRedis | None = None
        self.redis_url = settings.redis_url or ""
        self.port = settings.port
        self.http_port = settings.http_port
        self.utp_port = settings.utp_port
        self.workers = [_Worker(n) for n in range(settings.workers)]
        self._reserved: list[socket.socket] = []
        self._stopping = asyncio.Event()
        # Where the workers keep their metrics, so that a scrape on one sees them all.
        self.metrics: MultiprocessDirectory | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Start, serve until ``stop()`` (SIGTERM), drain every worker, clean up."""
        try:
            await self._start()
            log.info(
                "xstream listening on %s:%d%s (redis: %s%s, data: %s, %d workers)",
                self.settings.host,
                self.port,
                f", http://{self.settings.http_host}:{self.http_port}"
                if self.settings.http
                else "",
                redact_url(self.redis_url),
                ", embedded" if self.embedded_redis else "",
                self.settings.data_dir,
                len(self.workers),
            )
            await self._stopping.wait()
        finally:
            await self._shut_down()

    async def _start(self) -> None:
        settings = self.settings
        private_directory(settings.data_dir)
        if settings.metrics:
            self.metrics = MultiprocessDirectory()
        if settings.redis_url is None:
            self.embedded_redis = EmbeddedRedis(settings.data_dir / "redis")
            await self.embedded_redis.start()
            self.redis_url = self.embedded_redis.url
        reserved = _reserve_tcp_port(settings.host, settings.port)
        self._reserved.append(reserved)
        self.port = reserved.getsockname()[1]
        if settings.http:
            reserved = _reserve_tcp_port(settings.http_host, settings.http_port)
            self._reserved.append(reserved)
            self.http_port = reserved.getsockname()[1]
        if settings.utp_port == 0:
            self.utp_port = _free_udp_port(settings.host)
        ready = await asyncio.gather(
            *(self._spawn(worker) for worker in self.workers), return_exceptions=True
        )
        for outcome in ready:
            if isinstance(outcome, BaseException):
                raise outcome
        for worker in self.workers:
            worker.task = asyncio.get_running_loop().create_task(self._watch(worker))

    def _overrides(self, worker: _Worker) -> dict[str, Any]:
        return {
            "port": self.port,
            "http_port": self.http_port,
            "utp_port": self.utp_port if worker.index == 0 else None,
            "redis_url": self.redis_url,
            "workers": 1,
            "reuse_port": True,
        }

    async def _spawn(self, worker: _Worker) -> None:
        """Start one worker and wait until it serves (WorkerStartFailed if it exits first)."""
        readable, writable = os.pipe()
        spec = {"index": worker.index, "ready_fd": writable, "settings": self._overrides(worker)}
        try:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "xstream_server.cli.server",
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                env={
                    **os.environ,
                    **(self.metrics.environment() if self.metrics is not None else {}),
                    WORKER_ENV: json.dumps(spec),
                },
                pass_fds=(writable,),
                # The worker gets SIGTERM if the supervisor dies, however it dies.
                preexec_fn=functools.partial(_child_setup, os.getpid()),
            )
        finally:
            os.close(writable)
        worker.started = time.monotonic()
        try:
            answer = await asyncio.to_thread(os.read, readable, 1)
        finally:
            os.close(readable)
        if answer != b"1":
            code = await worker.process.wait()
            raise WorkerStartFailed(f"worker {worker.index} exited at start-up (code {code})")
        log.info("worker %d ready (pid %d)", worker.index, worker.process.pid)

    async def _watch(self, worker: _Worker) -> None:
        """Start ``worker`` again whenever it dies, until the supervisor stops."""
        while not self._stopping.is_set():
            assert worker.process is not None
            code = await worker.process.wait()
            if self.metrics is not None:
                self.metrics.worker_died(worker.process.pid)
            if self._stopping.is_set():
                return
            lived = time.monotonic() - worker.started
            worker.delay = (
                min(worker.delay * 2, _MAX_RESTART_DELAY) if lived < _YOUNG else _MIN_RESTART_DELAY
            )
            log.warning(
                "worker %d (pid %d) exited with %s after %.1f s; starting it again in %.1f s",
                worker.index,
                worker.process.pid,
                code,
                lived,
                worker.delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), worker.delay)
                return
            try:
                await self._spawn(worker)
            except WorkerStartFailed as exc:
                log.warning("%s", exc)  # the loop waits on the dead process and tries again
            worker.restarts += 1

    async def _shut_down(self) -> None:
        self._stopping.set()
        for worker in self.workers:
            if worker.task is not None:
                worker.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.task
        running = [
            w.process
            for w in self.workers
            if w.process is not None and w.process.returncode is None
        ]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        grace = self.settings.shutdown_timeout + 10
        try:
            async with asyncio.timeout(grace):
                await asyncio.gather(*(process.wait() for process in running))
        except TimeoutError:
            log.warning("workers still running %g s after SIGTERM: killed", grace)
            for process in running:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await asyncio.gather(*(process.wait() for process in running))
        for sock in self._reserved:
            sock.close()
        if self.embedded_redis is not None:
            await self.embedded_redis.stop()
        if self.metrics is not None:
            self.metrics.remove()
        log.info("stopped")
