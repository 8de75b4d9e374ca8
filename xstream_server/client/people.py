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

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from ..app import Notification
from .connection import ClientConnection, ConnectionLostError, Transport, connect
from .errors import ConnectionFailedError, IntegrityError, RetryableServerError
from .progress import ProgressCallback
from .upload import DEFAULT_SERVER, Upload

__all__ = [
    "GET_ROUTE",
    "SEND_ROUTE",
    "People",
    "ReceiveProgress",
    "Received",
    "people",
    "receive",
    "send",
]

SEND_ROUTE: Final = "/send"
GET_ROUTE: Final = "/send/get"
_PULL_BUFFER: Final = 1024 * 1024


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

    async def done(self, key: str) -> dict[str, Any]:
        """Say every byte arrived: the sender gets ``stream-delivered``."""
        result: dict[str, Any] = await self._call("/send/done", {"key": key})
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


@dataclass(frozen=True, slots=True)
class Received:
    key: str
    path: Path
    size: int
    sha256: str
    resumed_from: int


# Told (bytes held, total) as the content arrives.
ReceiveProgress = Callable[[int, int], None]


async def receive(
    key: str,
    path: str | Path,
    *,
    server: str = DEFAULT_SERVER,
    authorization: str,
    on_progress: ReceiveProgress | None = None,
    retries: int = 8,
    transport: Transport = "tcp",
) -> Received:
    """Download the accepted send ``key`` to ``path`` (PROTOCOL §5, ``/send/get``), even
    while the sender still uploads it; then say ``/send/done`` so the sender gets
    ``stream-delivered``. Bytes go to ``path + ".part"`` first: an interrupted download
    (this run's dropped connections, or a later run) resumes from what that file holds.
    Raises ``IntegrityError`` when the bytes do not match the sender's sha256."""
    target = Path(path)
    part = target.with_name(target.name + ".part")
    loop = asyncio.get_running_loop()
    resumed_from = await loop.run_in_executor(None, _size_of, part)
    failures = 0
    total = -1
    while True:
        held = await loop.run_in_executor(None, _size_of, part)
        try:
            async with connect(server, transport=transport) as conn:
                grant = await conn.pull(
                    GET_ROUTE, held, _PULL_BUFFER, key=key, authorization=authorization
                )
                total = grant.total
                if on_progress is not None:
                    on_progress(held, total)
                with open(part, "ab") as sink:  # noqa: ASYNC230 - writes go to a thread
                    async for chunk in conn.pull_chunks():
                        await loop.run_in_executor(None, sink.write, chunk)
                        held += len(chunk)
                        if on_progress is not None:
                            on_progress(held, total)
                    await loop.run_in_executor(None, _sync, sink)
                if held >= total:
                    break
        except (ConnectionLostError, ConnectionFailedError, RetryableServerError) as exc:
            failures += 1
            if failures > retries:
                raise ConnectionFailedError(f"download of {key} failed: {exc}", failures) from exc
            await asyncio.sleep(min(0.25 * 2**failures, 10.0))
    digest = await loop.run_in_executor(None, _sha256_of, part)
    async with await people(server, authorization=authorization, transport=transport) as me:
        answer = await me.done(key)
    if answer.get("sha256") != digest:
        raise IntegrityError(key, digest, str(answer.get("sha256")))
    await loop.run_in_executor(None, os.replace, part, target)
    return Received(key, target, total, digest, resumed_from)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _sync(file: Any) -> None:
    file.flush()
    os.fsync(file.fileno())


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
