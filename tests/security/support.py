"""Tools of the security tests: the redis-server processes serving a data directory, found
the way an operator would (``ps``: name and working directory), and a redis-server run on a
data directory the way earlier versions of xstream ran it (TCP, no password)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import psutil
import redis

from xstream_server.embedded_redis import find_redis_server


def running(process: psutil.Process) -> bool:
    """Alive, and not a zombie waiting for its parent to collect it."""
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def redis_servers(directory: Path) -> list[psutil.Process]:
    """Every live redis-server whose working directory (its ``dir``) is ``directory``."""
    wanted = str(directory.resolve())
    found = []
    for process in psutil.process_iter(["name"]):
        if process.info["name"] != "redis-server" or not running(process):
            continue
        try:
            if process.cwd() == wanted:
                found.append(process)
        except psutil.Error:
            continue
    return found


def redis_child(pid: int) -> psutil.Process:
    """The one redis-server child of process ``pid``."""
    children = [p for p in psutil.Process(pid).children() if p.name() == "redis-server"]
    assert len(children) == 1, children
    return children[0]


def older_redis(directory: Path, port: int) -> subprocess.Popen[bytes]:
    """A redis-server on ``directory`` as xstream ran it before it was made private: a TCP
    port on loopback, no password, files made with the test's umask (0644 as a rule). Returns once
    it accepts connections."""
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            find_redis_server(),
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)),
            *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
            *("--daemonize", "no", "--logfile", "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:  # nothing announces it but the port: ask it
        try:
            with redis.Redis(port=port, socket_connect_timeout=1) as client:
                if client.ping():
                    return process
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
