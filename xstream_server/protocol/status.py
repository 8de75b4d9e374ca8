"""Status numbers of the wire protocol (PROTOCOL §4).

Errors borrow HTTP's numbers so that they map one to one onto an HTTP interface later.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Status"]


class Status(IntEnum):
    OK = 0
    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    METHOD_NOT_ALLOWED = 405
    TIMEOUT = 408
    CONFLICT = 409
    GONE = 410
    TOO_LARGE = 413
    RANGE_NOT_SATISFIABLE = 416
    TOO_MANY_STREAMS = 429
    HEADERS_TOO_LARGE = 431
    CHECKSUM_MISMATCH = 460
    SERVER_ERROR = 500
    UNAVAILABLE = 503
    INSUFFICIENT_STORAGE = 507

    @property
    def phrase(self) -> str:
        return _PHRASES[self]


_PHRASES = {
    Status.OK: "ok",
    Status.BAD_REQUEST: "bad request",
    Status.UNAUTHORIZED: "credential missing or invalid",
    Status.FORBIDDEN: "not allowed",
    Status.NOT_FOUND: "unknown route",
    Status.METHOD_NOT_ALLOWED: "method not allowed on this route",
    Status.TIMEOUT: "timed out",
    Status.CONFLICT: "conflicts with the stored stream",
    Status.GONE: "stream key unknown or expired",
    Status.TOO_LARGE: "too large for this route",
    Status.RANGE_NOT_SATISFIABLE: "offset beyond the content's end",
    Status.TOO_MANY_STREAMS: "too many concurrent streams",
    Status.HEADERS_TOO_LARGE: "header block too large or too many headers",
    Status.CHECKSUM_MISMATCH: "checksum mismatch",
    Status.SERVER_ERROR: "server error",
    Status.UNAVAILABLE: "server unavailable",
    Status.INSUFFICIENT_STORAGE: "out of storage",
}
