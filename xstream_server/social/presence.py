"""Presence (PROTOCOL §7): ``/presence/register``, ``/presence/list``, ``/presence/lookup``.

A registration lasts ``presence_expiry`` seconds (120 by default) after the last one; an
open monitor keeps its principal online too (``monitor.py``)."""

from __future__ import annotations

import time
from typing import Any, Final

from ..app import App, AuthPolicy, RequestContext, RouteError
from ..protocol import Status
from ..state.social import PresenceRow
from .service import PRINCIPAL, PeopleService, json_object, principal_of, unavailable_as_503

__all__ = ["add_presence_routes"]

_MAX_IDENTITY: Final = 512
_MAX_NAMES: Final = 1000


def _row(row: PresenceRow) -> dict[str, Any]:
    return {"name": row.name, "identity": row.identity, "seen": round(row.seen, 3)}


def add_presence_routes(app: App, people: PeopleService, auth: AuthPolicy) -> None:
    @app.request("/presence/register", auth=auth)
    @unavailable_as_503
    async def register(request: RequestContext) -> dict[str, Any]:
        body = json_object(request)
        identity = body.get("identity")
        if identity is not None and (
            not isinstance(identity, str) or len(identity) > _MAX_IDENTITY
        ):
            raise RouteError(
                Status.BAD_REQUEST, f"identity must be a string of at most {_MAX_IDENTITY}"
            )
        name = principal_of(request)
        now = time.time()
        expires = now + people.settings.presence_expiry
        await people.store.register(name, identity, now, expires)
        return {"name": name, "expires": round(expires, 3)}

    @app.request("/presence/list", auth=auth)
    @unavailable_as_503
    async def everyone(request: RequestContext) -> list[dict[str, Any]]:
        json_object(request)
        return [_row(row) for row in await people.store.online(time.time())]

    @app.request("/presence/lookup", auth=auth)
    @unavailable_as_503
    async def lookup(request: RequestContext) -> list[dict[str, Any]]:
        names = json_object(request).get("names")
        if (
            not isinstance(names, list)
            or len(names) > _MAX_NAMES
            or not all(isinstance(n, str) and PRINCIPAL.fullmatch(n) for n in names)
        ):
            raise RouteError(
                Status.BAD_REQUEST, 'payload must be {"names": ["@name", ...]} (principal names)'
            )
        return [_row(row) for row in await people.store.online(time.time(), names)]
