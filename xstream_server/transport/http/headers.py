"""Request and response headers shared by the tus and IETF faces: integers, dates, and
``Upload-Metadata``."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from email.utils import formatdate
from typing import Final

from starlette.requests import Request

__all__ = ["BadHeader", "decimal_header", "encode_metadata", "http_date", "parse_metadata"]

_DECIMAL: Final = re.compile(r"[0-9]{1,19}")
_METADATA_KEY: Final = re.compile(r"[!#-+\--~]+")  # printable ASCII but space and comma


class BadHeader(ValueError):
    pass


def parse_metadata(value: str) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64(value)`` pairs; a key alone has an
    empty value. Keys are unique; values must decode to UTF-8 text."""
    metadata: dict[str, str] = {}
    if not value.strip():
        return metadata
    for pair in value.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not _METADATA_KEY.fullmatch(parts[0]):
            raise BadHeader(f"malformed Upload-Metadata pair {pair.strip()!r}")
        key = parts[0]
        if key in metadata:
            raise BadHeader(f"Upload-Metadata key {key!r} given twice")
        try:
            raw = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
            metadata[key] = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise BadHeader(f"Upload-Metadata value of {key!r} is not base64 of UTF-8") from exc
    return metadata


def encode_metadata(metadata: Mapping[str, str]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" if value else key
        for key, value in metadata.items()
    )


def decimal_header(request: Request, name: str) -> int | None:
    """A header that must be a non-negative integer when present."""
    value = request.headers.get(name)
    if value is None:
        return None
    if not _DECIMAL.fullmatch(value.strip()):
        raise BadHeader(f"{name} must be a non-negative integer")
    return int(value)


def http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)
