"""Files between people, client side (PROTOCOL §7, §8): presence, a monitor with its
notifications, and send-to-user (send, accept, deny, done).

    async with people("127.0.0.1:7070", authorization="Bearer …") as me:
        await me.monitor()
        async for note in me.notifications():
            if note.kind == "stream-offer":
                await me.accept(note.payload["key"])

    result = await send("big.iso", to="@bob", server=..., authorization=..., on_progress=print)
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from ..app import Notification
from .connection import ClientConnection, Transport, connect
from .download import DownloadResult, download
from .errors import ChecksumMismatchError, IntegrityError
from .progress import ProgressCallback
from .upload import DEFAULT_SERVER, Upload

__all__ = [
    "GET_ROUTE",
    "SEND_ROUTE",
    "People",
    "people",
    "receive",
    "send",
]

SEND_ROUTE: Final = "/send"
GET_ROUTE: Final = "/send/get"
_HEX64: Final = re.compile(r"[0-9a-f]{64}")


class People:
    """One principal's requests on one connection. After ``monitor()`` the connection also
    carries notifications: read them with ``notifications()``."""

    def __init__(
        self,
        connection: ClientConnection,
        authorization: str,
        address: str = DEFAULT_SERVER,
        transport: Transport = "tcp",
    ) -> None:
        self.connection = connection
        self.authorization = authorization
        # Where more connections go (downloads), and how.
        self.connection_address = address
        self.transport: Transport = transport

    async def _call(self, route: str, body: dict[str, Any]) -> Any:
        reply = await self.connection.request(route, json=body, authorization=self.authorization)
        return reply.json()

    # ---- presence ------------------------------------------------------------------------
    async def register(self, identity: str | None = None) -> dict[str, Any]:
        """Be online for the server's presence expiry (120 s by default); call again to stay."""
        body = {} if identity is None else {"identity": identity}
        result: dict[str, Any] = await self._call("/presence/register", body)
        return result

    async def online(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Who is online: everyone, or only ``names``."""
        if names is None:
            rows: list[dict[str, Any]] = await self._call("/presence/list", {})
        else:
            rows = await self._call("/presence/lookup", {"names": list(names)})
        return rows

    # ---- notifications -------------------------------------------------------------------
    async def monitor(self, since: str | None = None) -> str:
        """Start receiving notifications (those after ``since``, else every one kept);
        returns the principal's name."""
        body = {} if since is None else {"since": since}
        answer: dict[str, Any] = await self._call("/monitor", body)
        return str(answer["name"])

    def notifications(self) -> AsyncIterator[Notification]:
        return self.connection.notifications()

    async def next_notification(self) -> Notification:
        return await self.connection.next_notification()

    async def ack(self, ids: Sequence[str]) -> int:
        """Remove notifications from the inbox; returns how many were there."""
        return int((await self._call("/monitor/ack", {"ids": list(ids)}))["removed"])

    # ---- sends ---------------------------------------------------------------------------
    async def accept(self, key: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("/send/accept", {"key": key})
        return result

    async def deny(self, key: str, reason: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"key": key}
        if reason is not None:
            body["reason"] = reason
        result: dict[str, Any] = await self._call("/send/deny", body)
        return result

    async def done(self, key: str, sha256: str | None = None) -> dict[str, Any]:
        """Say every byte arrived: the sender gets ``stream-delivered``. With ``sha256`` (of
        what arrived) the server first checks it against the upload's: a different one is
        refused with ``ChecksumMismatchError`` (460) and nothing is marked delivered."""
        body: dict[str, Any] = {"key": key}
        if sha256 is not None:
            body["sha256"] = sha256
        result: dict[str, Any] = await self._call("/send/done", body)
        return result

    async def refuse(self, names: Sequence[str], refuse: bool = True) -> None:
        """Take no files (or take them again) from these senders."""
        await self._call("/send/refuse", {"names": list(names), "refuse": refuse})

    async def status(self, key: str) -> dict[str, Any]:
        """``/stream-status`` of a send: with ``delivered`` bytes and ``send-state``."""
        result: dict[str, Any] = await self._call("/stream-status", {"key": key})
        return result

    async def close(self) -> None:
        await self.connection.close()

    async def __aenter__(self) -> People:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.connection.close()
        else:
            self.connection.abort()


async def people(
    server: str = DEFAULT_SERVER,
    *,
    authorization: str,
    timeout: float | None = 10.0,
    transport: Transport = "tcp",
) -> People:
    """A connection for one principal (``async with await people(...) as me``)."""
    connection = await connect(server, timeout=timeout, transport=transport)
    return People(connection, authorization, server, transport)


def send(
    path: str,
    *,
    to: str,
    server: str = DEFAULT_SERVER,
    authorization: str,
    name: str | None = None,
    metadata: dict[str, str | int] | None = None,
    key: str | None = None,
    on_progress: ProgressCallback | None = None,
    transport: Transport = "tcp",
) -> Upload:
    """An upload of ``path`` on ``/send`` addressed to ``to``: ``await`` it for the
    ``UploadResult``. It resumes as any upload, whether the addressee is online or not."""
    return Upload(
        path,
        server=server,
        route=SEND_ROUTE,
        name=name,
        key=key,
        metadata={**(metadata or {}), "to": to},
        authorization=authorization,
        on_progress=on_progress,
        transport=transport,
    )


async def receive(
    key: str,
    path: str | Path,
    *,
    server: str = DEFAULT_SERVER,
    authorization: str,
    on_progress: ProgressCallback | None = None,
    transport: Transport = "tcp",
) -> DownloadResult:
    """Download the accepted send ``key`` to ``path`` (``download`` on ``/send/get``:
    resumable through ``path.part``), even while the sender still uploads it; then say
    ``/send/done`` with the sha256 of what arrived, so the sender gets ``stream-delivered``.
    Raises ``IntegrityError`` when the bytes do not match the sha256 the server recorded of
    the upload; the send is then not marked delivered."""
    result = await download(
        key,
        path,
        server=server,
        route=GET_ROUTE,
        authorization=authorization,
        on_progress=on_progress,
        transport=transport,
    )
    async with await people(server, authorization=authorization, transport=transport) as me:
        try:
            answer = await me.done(key, result.sha256)
        except ChecksumMismatchError as refused:
            # The server names the upload's digest in its message.
            theirs = _HEX64.findall(str(refused))
            raise IntegrityError(key, result.sha256, theirs[-1] if theirs else "?") from None
    if answer.get("sha256") != result.sha256:
        raise IntegrityError(key, result.sha256, str(answer.get("sha256")))
    return result
