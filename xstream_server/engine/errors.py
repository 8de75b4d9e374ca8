"""From what went wrong to the status a client is told, and new stream keys."""

from __future__ import annotations

import secrets

from ..app import RouteError
from ..protocol import Status
from ..state import LeaseLost, StateUnavailable
from ..storage import StorageError, StorageFull

__all__ = ["new_key", "status_of_error"]


def status_of_error(exc: BaseException) -> tuple[Status, str]:
    if isinstance(exc, StorageFull):
        return Status.INSUFFICIENT_STORAGE, str(exc)
    if isinstance(exc, StateUnavailable):
        return Status.UNAVAILABLE, "state store unreachable"
    if isinstance(exc, LeaseLost):
        return Status.CONFLICT, "stream taken over by a newer request"
    if isinstance(exc, RouteError):
        return exc.status, exc.message
    if isinstance(exc, StorageError):
        return Status.SERVER_ERROR, str(exc)
    return Status.SERVER_ERROR, "internal error"


def new_key() -> str:
    """144 random bits, URL-safe; never starting with '-', which a shell command line would
    take for an option (``xstream status KEY``)."""
    while (key := secrets.token_urlsafe(18)).startswith("-"):
        pass
    return key
