"""Subprocesses of a benchmark run: Redis, the servers under test, the load generator.

Every process is started on 127.0.0.1 with a free port, logs to a file in the run's work
directory, and is stopped by its own pid. While the load generator runs, a thread samples
the server's resident memory so that the peak is known.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil

__all__ = [
    "LoadResult",
    "ManagedProcess",
    "RssSampler",
    "free_port",
    "run_loadgen",
    "server_rss",
]

LOOPBACK: Final = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ManagedProcess:
    """A long-running child process that announces readiness with a line in its log."""

    name: str
    command: Sequence[str]
    log_path: Path
    ready_marker: str
    env: Mapping[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 60.0) -> None:
        environment = dict(os.environ)
        environment.update(self.env or {})
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                list(self.command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_marker in self.log_path.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"{self.name} did not start ({' '.join(self.command)}):\n{tail}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def server_rss(pid: int) -> int:
    """Resident bytes of the server and its children, not counting a Redis it may embed."""
    process = psutil.Process(pid)
    total: int = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            if "redis" not in child.name():
                total += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def server_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds on a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, server_rss(self._pid))
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self.peak = server_rss(self._pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class LoadResult:
    """The load generator's JSON plus what was observed on the server meanwhile."""

    data: dict[str, Any]
    server_rss_before: int
    server_rss_peak: int
    server_cpu_s: float
    failure: str = ""


def loadgen_command(port: int, target: str, scenario: Sequence[str], timeout: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "--port",
        str(port),
        "--target",
        target,
        "--timeout",
        str(timeout),
        *scenario,
    ]


def last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            value: dict[str, Any] = json.loads(line)
            return value
    raise ValueError("no JSON result in the load generator's output")


def run_loadgen(
    server_pid: int, port: int, target: str, scenario: Sequence[str], timeout: float
) -> LoadResult:
    """Run one load-generator process to completion while watching the server."""
    command = loadgen_command(port, target, scenario, timeout)
    cpu_before = server_cpu(server_pid)
    with RssSampler(server_pid) as sampler:
        rss_before = sampler.peak
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout + 30, check=False
            )
        except subprocess.TimeoutExpired:
            return LoadResult({}, rss_before, sampler.peak, 0.0, f"timed out after {timeout} s")
    cpu = server_cpu(server_pid) - cpu_before
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        return LoadResult({}, rss_before, sampler.peak, cpu, f"exit {done.returncode}: {tail}")
    return LoadResult(last_json_line(done.stdout), rss_before, sampler.peak, cpu)
