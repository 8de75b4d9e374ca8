"""The whole server in one object: state store, storage, stream engine, transport, background work.

async with Server(app, settings) as server:
    print(server.port)
    await server.wait_closed()
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import importlib
import logging
import resource
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

from starlette.routing import WebSocketRoute

from .app import App, Services
from .embedded_redis import EmbeddedRedis, redact_url
from .engine import StreamEngine
from .events import EVENT_STREAM
from .health import health_routes
from .identity import bind_auth_policies
from .metrics import metrics_routes
from .private import private_directory
from .protocol import Status
from .settings import ServerSettings
from .state import RedisStateStore, StateUnavailable
from .storage import FileStorage
from .transport import TcpTransportServer
from .transport.http import HttpContext, HttpTransportServer, build_http_app
from .transport.limits import SharedLimits
from .transport.utp import UtpTransportServer
from .transport.websocket import WEBSOCKET_PATH, WebSocketEndpoint
from .web import web_routes

__all__ = ["Server", "load_app"]

log = logging.getLogger("xstream.server")

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)


def load_app(spec: str) -> App:
    """``module:attribute`` → the ``App`` it names."""
    module_name, _, attribute = spec.partition(":")
    app = getattr(importlib.import_module(module_name), attribute or "app")
    if not isinstance(app, App):
        raise TypeError(f"{spec} is a {type(app).__name__}, not an xstream App")
    return app


def _return_freed_memory() -> None:
    """Serve buffers of 128 KiB and more from their own mappings, so that memory a burst of
    connections held goes back to the system once they close. glibc otherwise raises this
    threshold as large blocks are freed, and the memory stays with the process for good."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


def _raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    def __init__(self, app: App, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings
        self.role = "xstream listening"  # how the start-up line names this process
        self.embedded_redis: EmbeddedRedis | None = None
        self.redis_url = settings.redis_url or ""
        self.host = settings.host
        self.port = settings.port
        self._background: list[asyncio.Task[None]] = []
        self._closed = asyncio.Event()
        self.engine: StreamEngine | None = None
        # Connections per address and the input budget count over every transport.
        self.shared_limits = SharedLimits(
            settings.max_connections_per_address, settings.input_budget
        )
        self.transport: TcpTransportServer | None = None
        self.utp_transport: UtpTransportServer | None = None
        self.utp_port: int | None = None
        self.store: RedisStateStore | None = None
        self._services: Services | None = None
        self._executor: ThreadPoolExecutor | None = None
        # The HTTP face exists before the engine does, so that it can be mounted into
        # another ASGI application (run the server in that application's lifespan).
        self._http_context = HttpContext(app, stall_timeout=settings.raw_stall_timeout)
        self.websocket = WebSocketEndpoint(settings, self.shared_limits)
        self.http_app = build_http_app(
            self._http_context,
            max_payload=settings.max_payload,
            cors_origins=settings.http_cors_origins,
            extra_routes=[
                WebSocketRoute(WEBSOCKET_PATH, self.websocket.serve),
                *health_routes(lambda: self.engine, settings.data_dir),
                *(metrics_routes(lambda: self.engine) if settings.metrics else []),
                *web_routes(page=settings.http_page),
            ],
        )
        self.http: HttpTransportServer | None = None
        self.http_host = settings.http_host
        self.http_port: int | None = None

    async def start(self) -> None:
        _raise_open_file_limit()
        _return_freed_memory()
        self._executor = ThreadPoolExecutor(self.settings.io_threads, thread_name_prefix="xs-io")
        asyncio.get_running_loop().set_default_executor(self._executor)
        data_dir = self.settings.data_dir
        private_directory(data_dir)
        bind_auth_policies(self.app, self.settings)
        if self.settings.redis_url is None:
            self.embedded_redis = EmbeddedRedis(data_dir / "redis")
            await self.embedded_redis.start()
            self.redis_url = self.embedded_redis.url
        self.store = RedisStateStore(
            self.redis_url,
            timeout=self.settings.redis_timeout,
            lease_seconds=self.settings.lease_seconds,
        )
        storage = FileStorage(
            data_dir / "streams",
            fsync=self.settings.fsync,
            inline_writes=self.settings.inline_writes,
        )
        self.engine = StreamEngine(self.app, self.store, storage, self.settings)
        if self.settings.event_stream:
            self.engine.events.publisher = functools.partial(
                self.store.append_events,
                stream=EVENT_STREAM,
                maxlen=self.settings.event_stream_length,
            )
        try:
            await self.store.ping()
            await self.store.upgrade()
            await self.engine.maintenance.reconcile()
        except StateUnavailable as exc:
            log.warning("redis not reachable at start-up (%s); stream requests get 503", exc)
        self._services = Services(self.settings, self.redis_url, self.store, storage, self.engine)
        for hook in self.app.on_start:
            await hook(self._services)
        self.transport = TcpTransportServer(self.engine, self.settings, self.shared_limits)
        self.host, self.port = await self.transport.start(
            self.settings.host, self.settings.port, reuse_port=self.settings.reuse_port
        )
        self._http_context.engine = self.engine
        self.websocket.engine = self.engine
        if self.settings.http:
            self.http = HttpTransportServer(self.http_app, self.settings.shutdown_timeout)
            self.http_host, self.http_port = await self.http.start(
                self.settings.http_host,
                self.settings.http_port,
                reuse_port=self.settings.reuse_port,
            )
        if self.settings.utp_port is not None:
            self.utp_transport = UtpTransportServer(self.engine, self.settings)
            _, self.utp_port = await self.utp_transport.start(self.host, self.settings.utp_port)
            log.info("uTP on %s:%d (udp)", self.host, self.utp_port)
        loop = asyncio.get_running_loop()
        maintenance = self.engine.maintenance
        self._background = [
            loop.create_task(self._forever(maintenance.serve_takeovers, "takeover listener")),
            loop.create_task(self._forever(maintenance.renew_leases, "lease renewal")),
            loop.create_task(self._sweep_periodically()),
            loop.create_task(self._forever(self.engine.events.deliver, "event delivery")),
        ]
        log.info(
            "%s on %s:%d%s (redis: %s%s, data: %s, fsync: %s)",
            self.role,
            self.host,
            self.port,
            f", http://{self.http_host}:{self.http_port}" if self.http else "",
            redact_url(self.redis_url),
            ", embedded" if self.embedded_redis else "",
            data_dir,
            "on" if self.settings.fsync else "off",
        )

    async def _forever(self, work: Callable[[], Awaitable[None]], name: str) -> None:
        """Run a background loop, restarting it after Redis trouble."""
        while True:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s interrupted (%s); retrying", name, exc)
            await asyncio.sleep(1.0)

    async def _sweep_periodically(self) -> None:
        assert self.engine is not None
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            try:
                await self.engine.sweep()
            except StateUnavailable as exc:
                log.warning("sweeper skipped: %s", exc)
            except Exception:
                # Anything else (a part that cannot be deleted...) must not end the sweeper
                # for the rest of the process's life.
                log.exception("sweeper failed; next try in %g s", self.settings.sweep_interval)

    async def close(self) -> None:
        if self._closed.is_set():
            return
        log.info("shutting down")
        if self.engine is not None:
            self.engine.shut_down()
        # Request bodies still arriving end here: what came is made durable and answered.
        self._http_context.windows.stop_all(Status.UNAVAILABLE, "server shutting down")
        # Connections of both byte-stream transports end together (windows answered 503).
        closing = [self.websocket.close()]
        if self.transport is not None:
            closing.append(self.transport.close())
        await asyncio.gather(*closing)
        if self.http is not None:
            await self.http.close()
        if self.utp_transport is not None:
            await self.utp_transport.close()
        if self.engine is not None:
            await self.engine.wait_settled(self.settings.shutdown_timeout)
            await self.engine.events.drain(self.settings.shutdown_timeout)
        if self._services is not None:
            for hook in reversed(self.app.on_stop):
                try:
                    await hook(self._services)
                except Exception:
                    log.exception("a stop hook of the app failed")
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.store is not None:
            await self.store.close()
        if self.embedded_redis is not None:
            await self.embedded_redis.stop()
        self._closed.set()
        log.info("stopped")

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """The server as the lifespan of an ASGI application that mounts ``http_app``."""
        async with self:
            yield

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
