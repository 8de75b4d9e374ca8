"""Private files: every folder xstream makes under its data directory is 0700 and every file
0600, so no other local user can read a stream key (part files are named after them), a
byte of data, or Redis's files. Folders made by an older version are tightened when met."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = ["private_directory", "private_files"]

log = logging.getLogger("xstream.server")


def _tighten(path: Path, mode: int) -> None:
    current = stat.S_IMODE(mode)
    if current & 0o077:
        try:
            os.chmod(path, current & 0o700)
        except PermissionError as exc:  # not its owner: say so, the operator must act
            log.warning("%s is readable by other users and cannot be made private: %s", path, exc)
            return
        log.info("made %s private (mode %04o, was %04o)", path, current & 0o700, current)


def private_directory(path: Path) -> None:
    """Make ``path`` (and missing parents) a folder only its owner can enter: created 0700,
    or tightened to it when it exists with access for group or others."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _tighten(path, path.stat().st_mode)


def private_files(folder: Path) -> None:
    """Tighten the regular files directly in ``folder`` to owner-only access."""
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False):
            _tighten(Path(entry.path), entry.stat(follow_symlinks=False).st_mode)
