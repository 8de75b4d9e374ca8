"""``PeopleService``: the service behind presence, monitors and sends. It is built on the
framework's public API only: routes on an ``App``, a start and a stop hook that hand it the
server's parts (``Services``), and a ``SocialStore`` for everything it knows.

Per server process it keeps one pub/sub subscription (wake-ups for inboxes that got a
notification, from any process) and, per open monitor, one ``asyncio.Event``: a monitor
costs no Redis connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, Final, ParamSpec, TypeVar

from ..app import AuthPolicy, RequestContext, RouteError, Services
from ..identity import TokenAuth
from ..protocol import DataFormat, Status
from ..settings import ServerSettings
from ..state import StateUnavailable
from ..state.redis import is_cluster_url
from ..state.redis_social import RedisSocialStore
from ..state.social import SocialStore

__all__ = [
    "POLL_INTERVAL",
    "PRINCIPAL",
    "PeopleService",
    "json_object",
    "principal_of",
    "require_principal",
    "unavailable_as_503",
]

log = logging.getLogger("xstream.people")

PRINCIPAL: Final = re.compile(r"@[a-z0-9_.-]{1,64}")
# A monitor looks at its inbox by itself this often, in case a wake-up was lost.
POLL_INTERVAL: Final = 30.0


P = ParamSpec("P")
R = TypeVar("R")


def unavailable_as_503(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A store that cannot be reached answers 503, not 500."""

    @wraps(handler)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except StateUnavailable as exc:
            raise RouteError(Status.UNAVAILABLE, f"state store unreachable: {exc}") from exc

    return call


def require_principal(auth: AuthPolicy) -> AuthPolicy:
    """``auth``, refusing requests that name no principal (401) or a malformed one (403)."""

    async def policy(authorization: str | None) -> str | None:
        principal = await auth(authorization)
        if principal is None:
            raise RouteError(Status.UNAUTHORIZED, "a principal is required: send authorization")
        if not PRINCIPAL.fullmatch(principal):
            raise RouteError(Status.FORBIDDEN, f"{principal!r} is not a principal name")
        return principal

    return policy


def json_object(request: RequestContext) -> dict[str, Any]:
    """The request's JSON object payload (an empty payload counts as ``{}``); else 400."""
    if not request.payload:
        return {}
    content = request.content
    if request.data_format is not DataFormat.JSON:
        try:
            content = json.loads(request.payload)
        except (ValueError, RecursionError):
            content = None
    if not isinstance(content, dict):
        raise RouteError(Status.BAD_REQUEST, "the payload must be a JSON object")
    return content


def principal_of(request: RequestContext) -> str:
    if request.principal is None:  # pragma: no cover - require_principal runs first
        raise RouteError(Status.UNAUTHORIZED, "a principal is required")
    return request.principal


class PeopleService:
    def __init__(self, auth: AuthPolicy) -> None:
        self._auth = auth
        self._store: SocialStore | None = None
        self._services: Services | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._monitors: dict[str, str] = {}  # holder → principal, for renewals
        self._tasks: list[asyncio.Task[None]] = []
        self._instance = secrets.token_hex(6)
        self._holders = itertools.count(1)
        self._starts = 0
        self._stopping = False

    # ---- lifecycle (the app's start and stop hooks) ------------------------------------
    async def start(self, services: Services) -> None:
        self._starts += 1
        if self._starts > 1:
            # The same app served by a second server in this process (tests do that): the
            # first one's parts stay in use until the last server stops.
            return
        self._services = services
        self._stopping = False
        if isinstance(self._auth, TokenAuth):
            # Wrapped in ``require_principal``, the server would not find it to bind.
            self._auth.bind(services.settings)
        if is_cluster_url(services.redis_url):
            # Not yet: the social store's keys and pub/sub are for one Redis server.
            log.warning("presence, monitors and sends need a single Redis; they answer 503")
            return
        self._store = RedisSocialStore(services.redis_url, timeout=services.settings.redis_timeout)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._forever(self._listen, "inbox wake-ups")),
            loop.create_task(self._forever(self._renew_monitors, "monitor renewal")),
            loop.create_task(self._forever(self._purge, "send purge")),
        ]

    async def stop(self, services: Services) -> None:
        self._starts -= 1
        if self._starts > 0:
            return
        self._stopping = True
        # (A Redis call cancelled while it connects may swallow the cancellation: the
        # loops also end on ``_stopping``, and are cancelled again until they are gone.)
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        self._tasks = []
        store, self._store = self._store, None
        if store is not None:
            for holder, name in list(self._monitors.items()):
                with contextlib.suppress(StateUnavailable):
                    await store.drop_monitor(name, holder)
            await store.close()

    @property
    def store(self) -> SocialStore:
        if self._store is None:
            raise RouteError(Status.UNAVAILABLE, "the server is not started")
        return self._store

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RouteError(Status.UNAVAILABLE, "the server is not started")
        return self._services

    @property
    def settings(self) -> ServerSettings:
        return self.services.settings

    # ---- notifications -----------------------------------------------------------------
    async def notify(self, name: str, kind: str, sender: str | None, payload: Any) -> str:
        return await self.store.add_notification(
            name, kind, sender, payload, self.settings.notification_expiry
        )

    def watch(self, name: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(name, set()).add(event)
        return event

    def unwatch(self, name: str, event: asyncio.Event) -> None:
        events = self._waiters.get(name)
        if events is not None:
            events.discard(event)
            if not events:
                del self._waiters[name]

    async def hold(self, name: str) -> str:
        """Keep ``name`` online while a monitor is open; returns the hold's name."""
        holder = f"{self._instance}:{next(self._holders)}"
        now = time.time()
        await self.store.hold_monitor(name, holder, now, now + self.settings.presence_expiry)
        self._monitors[holder] = name
        return holder

    async def let_go(self, holder: str) -> None:
        name = self._monitors.pop(holder, None)
        if name is not None and self._store is not None:
            await self._store.drop_monitor(name, holder)

    # ---- background work -----------------------------------------------------------------
    async def _forever(self, work: Callable[[], Awaitable[None]], name: str) -> None:
        while not self._stopping:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    return
                log.warning("%s interrupted (%s); retrying", name, exc)
            await asyncio.sleep(1.0)

    async def _listen(self) -> None:
        # (Re)subscribed: wake every monitor, since wake-ups may have been missed meanwhile.
        first = True
        async for name in self.store.wakeups():
            if first:
                first = False
                self._wake_all()
            for event in self._waiters.get(name, ()):
                event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def _renew_monitors(self) -> None:
        expiry = self.settings.presence_expiry
        while True:
            await asyncio.sleep(expiry / 3)
            now = time.time()
            for holder, name in list(self._monitors.items()):
                await self.store.hold_monitor(name, holder, now, now + expiry)

    async def _purge(self) -> None:
        """Delete the content of delivered sends once their keep time is over."""
        settings = self.settings
        interval = max(0.5, min(settings.sweep_interval, settings.send_keep or 1.0))
        while True:
            for key in await self.store.due_purges(time.time()):
                refused = await self.services.engine.discard(
                    key, Status.GONE, "delivered, and no longer kept"
                )
                if refused is None or refused.status == Status.GONE:
                    await self.store.forget_send(key)
                    log.info("send %s: content deleted after delivery", key)
            await asyncio.sleep(interval)
