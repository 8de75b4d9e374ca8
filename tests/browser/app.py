"""An app whose routes refuse, for the page's refusal messages: ``/small`` takes at most
64 KiB (413), ``/members`` wants a bearer token (401), ``/closed`` refuses everyone (403)."""

from __future__ import annotations

from typing import Any

from xstream_server import App, CompletedUpload, RouteError, Status, StreamOffer

app = App()


async def _members_only(authorization: str | None) -> str:
    if authorization is None or not authorization.startswith("Bearer "):
        raise RouteError(Status.UNAUTHORIZED, "a bearer token is required")
    return authorization.removeprefix("Bearer ")


async def _closed(offer: StreamOffer) -> int | None:
    raise RouteError(Status.FORBIDDEN, "uploads are closed today")


async def _done(upload: CompletedUpload) -> Any:
    return {"key": upload.key}


app.stream("/small", max_size=64 * 1024)(_done)
app.stream("/members", auth=_members_only)(_done)
app.stream("/closed", accept=_closed)(_done)
