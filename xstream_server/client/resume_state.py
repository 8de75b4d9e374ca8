"""A small local record of unfinished uploads, so a command run again resumes its stream.

An entry ties a server-granted key to (server, route, file identity), and notes the
transport it was begun on. The identity is the file's real path, size, modification time
and inode: if any of them changed, the stored prefix may no longer match the file and the
upload starts over under a new key.

A stream belongs to the server, not to the transport or port that carried it: the same
server reached over TCP on one port and over uTP on another holds the same streams. So
``find`` returns the entry saved for this exact address first, and else one saved for the
same host on another port (another transport of the same server, most likely). A key the
server does not know (another server on that host, or the stream expired) is refused with
410, and the caller starts over.

The record is one JSON file, rewritten atomically (temporary file, fsync, rename) under an
advisory lock, so concurrent commands and a killed process never leave it half-written.
Its directory is ``$XSTREAM_STATE_DIR``, else ``$XDG_STATE_HOME/xstream``, else
``~/.local/state/xstream``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from .connection import parse_address

__all__ = ["FileIdentity", "ResumeStore", "SavedUpload", "default_state_dir", "host_of"]

_FILE_NAME: Final = "uploads.json"
_VERSION: Final = 1


def default_state_dir() -> Path:
    explicit = os.environ.get("XSTREAM_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "xstream"


def host_of(server: str) -> str:
    """The host of a ``HOST:PORT`` address (``[v6]:PORT`` too), lower-cased."""
    try:
        return parse_address(server)[0].lower()
    except ValueError:
        return server.lower()


@dataclass(frozen=True, slots=True)
class FileIdentity:
    path: str
    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> FileIdentity:
        real = os.path.realpath(path)
        info = os.stat(real)
        return cls(real, info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev)


@dataclass(frozen=True, slots=True)
class SavedUpload:
    key: str
    server: str
    route: str
    file: FileIdentity
    created: float
    acknowledged: int = 0
    transport: str = "tcp"  # what the stream was begun over (entries before it: tcp)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SavedUpload:
        return cls(
            key=str(data["key"]),
            server=str(data["server"]),
            route=str(data["route"]),
            file=FileIdentity(**data["file"]),
            created=float(data["created"]),
            acknowledged=int(data.get("acknowledged", 0)),
            transport=str(data.get("transport", "tcp")),
        )

    @property
    def host(self) -> str:
        return host_of(self.server)


class ResumeStore:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_state_dir()
        self.path = self.directory / _FILE_NAME

    def find(self, server: str, route: str, file: FileIdentity) -> SavedUpload | None:
        """The entry for this file and route on ``server``; else the newest one on the same
        host at another address (the same server over another transport)."""
        same_file = [e for e in self._load() if (e.route, e.file) == (route, file)]
        exact = [e for e in same_file if e.server == server]
        if exact:
            return exact[-1]
        host = host_of(server)
        others = sorted((e for e in same_file if e.host == host), key=lambda e: e.created)
        return others[-1] if others else None

    def by_key(self, key: str) -> SavedUpload | None:
        return next((entry for entry in self._load() if entry.key == key), None)

    def entries(self) -> list[SavedUpload]:
        return self._load()

    def save(self, entry: SavedUpload) -> None:
        """Add ``entry``, replacing any entry for the same key or for the same path on the
        same server and route (an older version of the file cannot be resumed anyway)."""
        target = (entry.server, entry.route, entry.file.path)
        with self._locked():
            kept = [
                e
                for e in self._load()
                if e.key != entry.key and (e.server, e.route, e.file.path) != target
            ]
            self._store([*kept, entry])

    def remove(self, key: str) -> None:
        with self._locked():
            entries = self._load()
            kept = [e for e in entries if e.key != key]
            if len(kept) != len(entries):
                self._store(kept)

    @staticmethod
    def new_entry(
        key: str, server: str, route: str, file: FileIdentity, transport: str = "tcp"
    ) -> SavedUpload:
        return SavedUpload(key, server, route, file, time.time(), transport=transport)

    def _load(self) -> list[SavedUpload]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            return []  # an unreadable record only costs a restart of the uploads it held
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            return []
        entries = []
        for item in data.get("uploads", []):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                entries.append(SavedUpload.from_json(item))
        return entries

    def _store(self, entries: list[SavedUpload]) -> None:
        payload = {"version": _VERSION, "uploads": [e.to_json() for e in entries]}
        fd, temporary = tempfile.mkstemp(prefix=".uploads-", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(payload, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
