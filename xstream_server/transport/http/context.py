"""What every HTTP endpoint shares: the ``App`` whose routes it serves, the engine (set once
the server has started, so that the Starlette application can be built, and mounted, before
that), the windows being filled by request bodies, and small request helpers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from starlette.requests import Request

from ...app import App
from ...engine import Engine
from .body import OpenWindows

__all__ = ["KEY", "HttpContext", "client_of", "key_of"]

KEY: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(slots=True)
class HttpContext:
    app: App
    engine: Engine | None = None
    windows: OpenWindows = field(default_factory=OpenWindows)
    # Seconds a request body may send nothing before its window ends with 408.
    stall_timeout: float | None = None


def key_of(request: Request) -> str | None:
    """The stream key in ``/R/<key>``, or None when it cannot be one."""
    key = request.path_params.get("key")
    return key if isinstance(key, str) and KEY.fullmatch(key) else None


def client_of(request: Request) -> str:
    """Who a stream counts against when it has no principal: the peer's address."""
    return request.client.host if request.client is not None else "unknown"
