"""``/healthz`` and ``/readyz`` on the HTTP port, for load balancers and orchestrators.

``/healthz`` answers 200 while the process serves HTTP at all (liveness). ``/readyz``
answers 200 only when a new upload could succeed here: Redis answers, the data directory
is writable with more free space than the reserve, and the server is not draining; else
503. Both answer JSON saying which check failed.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from .engine import StreamEngine
from .settings import ServerSettings
from .state import StateUnavailable

__all__ = ["health_routes"]


def health_routes(engine: Callable[[], StreamEngine | None], data_dir: Path) -> list[BaseRoute]:
    """The two routes; ``engine()`` is the server's engine (None until it has started)."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        checks: dict[str, str] = {}
        running = engine()
        if running is None:
            checks["server"] = "starting"
        elif running.shutting_down:
            checks["server"] = "draining"
        else:
            checks["server"] = "ok"
            try:
                async with asyncio.timeout(running.settings.redis_timeout):
                    await running.store.ping()
                checks["redis"] = "ok"
            except (StateUnavailable, TimeoutError) as exc:
                checks["redis"] = f"unreachable: {exc}"
            checks["storage"] = await asyncio.to_thread(
                _storage_check, data_dir, running.storage.free_space, running.settings
            )
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]


def _storage_check(data_dir: Path, free_space: Callable[[], int], settings: ServerSettings) -> str:
    reserve = settings.storage_reserve
    try:
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".ready-", delete=True) as probe:
            probe.write(b"1")
            probe.flush()
            os.fsync(probe.fileno())
        free = free_space()
    except OSError as exc:
        return f"not writable: {exc.strerror or exc}"
    if free <= reserve:
        return f"full: {free} bytes free, reserve {reserve}"
    return "ok"
