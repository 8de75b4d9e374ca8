"""Monitors (PROTOCOL §8): ``/monitor`` turns a connection into one that also receives
notification packets; ``/monitor/ack`` removes notifications from the inbox.

A notification stays in its principal's inbox until acknowledged or older than
``notification_expiry``; a monitor opened with ``{"since": id}`` gets those after ``id``,
one opened with ``{}`` all of them. While a monitor is open its principal is online."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any, Final

from ..app import App, AuthPolicy, Notification, Reply, RequestContext, RouteError
from ..protocol import Status
from .service import POLL_INTERVAL, PeopleService, json_object, principal_of, unavailable_as_503

__all__ = ["MonitorFeed", "add_monitor_routes"]

_BATCH: Final = 100
_MAX_ACK: Final = 1000
_ID_CHARS: Final = frozenset("0123456789-")


def _valid_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 41 and set(value) <= _ID_CHARS


class MonitorFeed:
    """One monitor's notifications (a ``NotificationFeed``): at most ``_BATCH`` at a time,
    read from the inbox after the last one handed out, woken by the process's pub/sub."""

    def __init__(self, people: PeopleService, name: str, since: str | None) -> None:
        self._people = people
        self._name = name
        self._last = since
        self._event: asyncio.Event | None = None
        self._holder: str | None = None

    async def open(self) -> None:
        self._event = self._people.watch(self._name)
        self._holder = await self._people.hold(self._name)

    async def next_batch(self) -> Sequence[Notification]:
        event = self._event
        assert event is not None, "open the feed first"
        while True:
            event.clear()  # before reading: a wake-up during the read is not lost
            oldest = time.time() - self._people.settings.notification_expiry
            entries = await self._people.store.notifications(self._name, self._last, _BATCH, oldest)
            if entries:
                self._last = entries[-1].id
                return [Notification(e.id, e.kind, e.payload, e.sender) for e in entries]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await event.wait()

    async def close(self) -> None:
        if self._event is not None:
            self._people.unwatch(self._name, self._event)
            self._event = None
        if self._holder is not None:
            holder, self._holder = self._holder, None
            await self._people.let_go(holder)


def add_monitor_routes(app: App, people: PeopleService, auth: AuthPolicy) -> None:
    @app.request("/monitor", auth=auth)
    @unavailable_as_503
    async def monitor(request: RequestContext) -> Reply:
        since = json_object(request).get("since")
        if since is not None and not _valid_id(since):
            raise RouteError(Status.BAD_REQUEST, "since must be a notification id")
        name = principal_of(request)
        return Reply({"name": name}, feed=MonitorFeed(people, name, since))

    @app.request("/monitor/ack", auth=auth)
    @unavailable_as_503
    async def ack(request: RequestContext) -> dict[str, Any]:
        ids = json_object(request).get("ids")
        if not isinstance(ids, list) or len(ids) > _MAX_ACK or not all(map(_valid_id, ids)):
            raise RouteError(Status.BAD_REQUEST, 'payload must be {"ids": ["<id>", ...]}')
        removed = await people.store.acknowledge(principal_of(request), ids)
        return {"removed": removed}
