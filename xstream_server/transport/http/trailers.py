"""Request trailer fields (the fields of a chunked body sent after its last chunk), which
ASGI does not give applications.

httptools (llhttp) reports a trailer field through the same ``on_header`` callback as a
header, after the body's chunks and before the message is complete; uvicorn's httptools
protocol appends it to the list it gave the application as ``scope["headers"]``, where an
application cannot tell it from a header (and Starlette reads a copy of that list made
before the body). ``TrailerHttpToolsProtocol`` keeps them apart instead: once the header
block is complete, fields go to a list of their own in the scope, under ``TRAILERS``,
which is full by the time the application has read the body to its end.

An application served otherwise (mounted into another server) has no such list: it sees
no trailers, and says so (``trailers_of`` gives None).

The subclass relies on three callbacks of uvicorn's ``HttpToolsProtocol``
(``on_message_begin``, which makes the scope, ``on_headers_complete`` and ``on_header``);
``tests/http/test_checksum_trailer.py`` fails if a uvicorn release changes them.
"""

from __future__ import annotations

from typing import Any, Final, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_TRAILER_BYTES", "TRAILERS", "TrailerHttpToolsProtocol", "trailers_of"]

TRAILERS: Final = "xstream.trailers"
# Trailer fields kept per request (names and values); past this they are dropped, so that
# a client cannot grow a request without end after its body.
MAX_TRAILER_BYTES: Final = 8192


class TrailerHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the trailer fields of a request in
    ``scope[TRAILERS]`` rather than appended to its headers."""

    _in_trailers: bool = False
    _trailer_bytes: int = 0
    _trailers: list[tuple[bytes, bytes]]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_trailers = False
        self._trailer_bytes = 0
        self._trailers = []
        cast(dict[str, Any], self.scope)[TRAILERS] = self._trailers

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._in_trailers = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_trailers:
            super().on_header(name, value)
            return
        self._trailer_bytes += len(name) + len(value)
        if self._trailer_bytes <= MAX_TRAILER_BYTES:
            self._trailers.append((name.lower(), value))


def trailers_of(scope: Any) -> list[tuple[bytes, bytes]] | None:
    """The request's trailer fields so far (all of them once its body has ended), or None
    when the server does not collect them."""
    fields = scope.get(TRAILERS)
    return fields if isinstance(fields, list) else None
