"""Exceptions of the client.

Two roots, because they call for different reactions:

* ``XStreamError`` — the server answered with a non-zero status (PROTOCOL §4). It carries
  ``status`` and ``message``; subclasses group the numbers by what a caller does about them.
* ``ClientError`` — nothing usable came back: the connection failed after every retry, the
  server broke the protocol, the stored content does not match ours, or the caller stopped
  the upload.

``UploadInterrupted`` and its subclasses are not failures of the server: they tell the
caller where a stopped upload stands (``key``, ``offset``), so it can be resumed later.
"""

from __future__ import annotations

from typing import Final

from ..protocol import Status

__all__ = [
    "AuthenticationError",
    "ChecksumMismatchError",
    "ClientError",
    "ConnectionFailedError",
    "IntegrityError",
    "NotResumableError",
    "RequestError",
    "RetryableServerError",
    "ServerError",
    "ServerProtocolError",
    "StreamConflictError",
    "StreamGoneError",
    "UploadAborted",
    "UploadClosed",
    "UploadInterrupted",
    "XStreamError",
    "error_for_status",
]


class XStreamError(Exception):
    """The server answered with ``status`` ≠ 0 and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r})"


class RequestError(XStreamError):
    """4xx: the request itself is wrong; sending it again will not help."""


class AuthenticationError(RequestError):
    """401 or 403: credential missing, invalid, or not allowed for this stream."""


class StreamConflictError(RequestError):
    """409: the key belongs to another route or another total size."""


class StreamGoneError(RequestError):
    """410: the key is unknown or expired; the upload must start over."""


class ChecksumMismatchError(RequestError):
    """460: the server found the content does not match the announced checksum; the
    stream was discarded."""


class ServerError(XStreamError):
    """5xx: the server failed (handler error, out of storage, ...)."""


class RetryableServerError(XStreamError):
    """408, 429 or 503: transient; the client retries these on its own with backoff and
    raises this only when every attempt is used up."""


_BY_STATUS: Final[dict[int, type[XStreamError]]] = {
    Status.UNAUTHORIZED: AuthenticationError,
    Status.FORBIDDEN: AuthenticationError,
    Status.CONFLICT: StreamConflictError,
    Status.GONE: StreamGoneError,
    Status.CHECKSUM_MISMATCH: ChecksumMismatchError,
    Status.TIMEOUT: RetryableServerError,
    Status.TOO_MANY_STREAMS: RetryableServerError,
    Status.UNAVAILABLE: RetryableServerError,
}


def error_for_status(status: int, message: str) -> XStreamError:
    """The exception that represents a non-zero ``status``."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else RequestError
    return cls(status, message)


class ClientError(Exception):
    """Raised by the client for anything that is not a status from the server."""


class ConnectionFailedError(ClientError):
    """The server could not be reached, or the connection kept dropping, ``attempts``
    times in a row without progress."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class ServerProtocolError(ClientError):
    """The server sent something PROTOCOL-v1 forbids (a bug in the server)."""


class IntegrityError(ClientError):
    """The server's sha256 of the stored content differs from the client's own."""

    def __init__(self, key: str, expected: str, reported: str) -> None:
        super().__init__(f"stream {key}: server stored sha256:{reported}, sent sha256:{expected}")
        self.key = key
        self.expected = expected
        self.reported = reported


class NotResumableError(ClientError):
    """The connection dropped and the bytes the server still needs can no longer be
    produced (a one-pass source whose replay buffer no longer holds them)."""


class UploadInterrupted(ClientError):
    """The upload was stopped by the caller before it completed; ``key`` (None if no key
    was granted yet) and ``offset`` (bytes the server holds durably) say where it stands."""

    def __init__(self, message: str, key: str | None, offset: int) -> None:
        super().__init__(message)
        self.key = key
        self.offset = offset


class UploadClosed(UploadInterrupted):
    """``close()`` stopped the upload after a granted window; the server confirmed
    ``offset``."""


class UploadAborted(UploadInterrupted):
    """``abort()`` dropped the connection; ``offset`` is the last one the server
    confirmed, it may hold more."""
