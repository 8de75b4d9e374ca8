"""Errors of the sans-IO protocol core.

One exception type carries the status number that answers it, in the spirit of h11's
``ProtocolError``: whoever catches it knows what to put on the wire.
"""

from __future__ import annotations

from .status import Status

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """The protocol was broken; ``status`` is the number that reports it."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self.status)}, {self.message!r})"


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids. Framing can no longer be trusted."""


class LocalProtocolError(ProtocolError):
    """Our own side tried to do something the protocol forbids (a bug in the caller)."""
