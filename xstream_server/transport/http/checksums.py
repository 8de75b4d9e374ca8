"""tus ``Upload-Checksum`` (the checksum and checksum-trailer extensions): the checksum of
a request's bytes, given as a header before them or as a trailer field after them.

A trailer names its algorithm only after the bytes, so a body checked by a trailer is
hashed with every supported algorithm at once, and the one the trailer names is compared.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping
from typing import Final

from starlette.requests import Request

from ...engine import PartCheck
from ...engine.window import CheckDigest
from .headers import BadHeader
from .trailers import trailers_of

__all__ = ["CHECKSUMS", "TrailerChecksum", "checksum_of", "parse_checksum"]

# Upload-Checksum algorithms (tus makes sha1 mandatory).
CHECKSUMS: Final[Mapping[str, Callable[[], CheckDigest]]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
}
_FIELD: Final = "upload-checksum"


def _parse(value: str) -> tuple[str, bytes]:
    """``<algorithm> <base64 digest>``: the algorithm's name and the digest."""
    algorithm, _, encoded = value.strip().partition(" ")
    algorithm = algorithm.lower()
    make = CHECKSUMS.get(algorithm)
    if make is None:
        raise BadHeader(f"checksum algorithm {algorithm!r} not supported: {','.join(CHECKSUMS)}")
    try:
        expected = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error as exc:
        raise BadHeader("Upload-Checksum digest is not base64") from exc
    if len(expected) != len(make().digest()):
        raise BadHeader(f"Upload-Checksum is not a {algorithm} digest")
    return algorithm, expected


def parse_checksum(value: str | None) -> PartCheck | None:
    """``Upload-Checksum: <algorithm> <base64 digest>`` as a header."""
    if value is None:
        return None
    algorithm, expected = _parse(value)
    return PartCheck(CHECKSUMS[algorithm](), expected)


def trailer_announced(request: Request) -> bool:
    """Whether the request's ``Trailer`` header announces ``Upload-Checksum``."""
    announced = request.headers.getlist("trailer")
    return any(name.strip().lower() == _FIELD for value in announced for name in value.split(","))


class _EveryDigest:
    """Every supported algorithm fed the same bytes; ``digest`` is the chosen one's."""

    def __init__(self) -> None:
        self._digests = {name: make() for name, make in CHECKSUMS.items()}
        self.chosen = next(iter(CHECKSUMS))

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        for digest in self._digests.values():
            digest.update(data)

    def digest(self) -> bytes:
        return self._digests[self.chosen].digest()


class TrailerChecksum:
    """The checksum of a body announced by ``Trailer: Upload-Checksum``: a ``PartCheck``
    whose expected digest is settled when the body ends (``body_end``), from the trailer
    field, or as None (the bytes are refused) when it is missing, malformed, or the body
    did not end."""

    def __init__(self, request: Request) -> None:
        self._fields = trailers_of(request.scope) or []
        self._digest = _EveryDigest()
        self._expected: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self.check = PartCheck(self._digest, self._expected)

    def body_end(self, whole: bool) -> None:
        if self._expected.done():
            return
        values = [value for name, value in self._fields if name == _FIELD.encode()]
        if not whole or len(values) != 1:
            self._expected.set_result(None)
            return
        try:
            algorithm, expected = _parse(values[0].decode("latin-1"))
        except BadHeader:
            self._expected.set_result(None)
            return
        self._digest.chosen = algorithm
        self._expected.set_result(expected)


def checksum_of(
    request: Request,
) -> tuple[PartCheck | None, Callable[[bool], None] | None]:
    """A request's checksum, from its ``Upload-Checksum`` header or announced as a
    trailer: the check, and what to call when the body ends (for a trailer). Raises
    ``BadHeader`` for a malformed header, both forms at once, or a trailer that cannot
    come (no chunked body, or a server that does not collect trailers)."""
    header = request.headers.get(_FIELD)
    if not trailer_announced(request):
        return parse_checksum(header), None
    if header is not None:
        raise BadHeader("Upload-Checksum both as a header and announced as a trailer")
    if "chunked" not in request.headers.get("transfer-encoding", "").lower():
        raise BadHeader("an Upload-Checksum trailer needs Transfer-Encoding: chunked")
    if trailers_of(request.scope) is None:
        raise BadHeader("this server cannot read trailers: send Upload-Checksum as a header")
    trailer = TrailerChecksum(request)
    return trailer.check, trailer.body_end
