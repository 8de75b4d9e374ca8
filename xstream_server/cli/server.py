"""``xstream-server``: serve an App over TCP and HTTP, with an embedded Redis unless one is named.

Every option can also come from an ``XSTREAM_*`` environment variable (``XSTREAM_PORT``,
``XSTREAM_REDIS_URL``, ``XSTREAM_FSYNC``...); a flag wins over the variable.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click
import uvloop
from pydantic import ValidationError

from ..app import ConfigurationError
from ..embedded_redis import EmbeddedRedisError
from ..logs import configure_logging
from ..server import Server, load_app
from ..settings import ServerSettings
from ..workers import Supervisor, WorkerStartFailed, report_ready, worker_overrides

__all__ = ["main"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", help="Interface to listen on [127.0.0.1].")
@click.option("--port", type=int, help="TCP port; 0 picks a free one [7070].")
@click.option("--http-host", help="Interface of the HTTP face (tus) [127.0.0.1].")
@click.option("--http-port", type=int, help="HTTP port; 0 picks a free one [7080].")
@click.option("--http/--no-http", default=None, help="Serve the HTTP face [on].")
@click.option("--page/--no-page", "http_page", default=None, help="The upload page at / [on].")
@click.option(
    "--metrics/--no-metrics", default=None, help="Prometheus metrics at /metrics (HTTP) [on]."
)
@click.option("--utp-port", type=int, help="UDP port for uTP; 0 picks a free one [off].")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where streams live [./data].")
@click.option("--redis-url", help="Redis to keep stream state in; none: start an embedded one.")
@click.option("--app", "app_spec", help="module:attribute of the App to serve [handlers:app].")
@click.option(
    "--app-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="XSTREAM_APP_DIR",
    help="Directory to import the app from [the current one].",
)
@click.option("--fsync/--no-fsync", default=None, help="fsync at checkpoints [on].")
@click.option(
    "--inline-writes/--pooled-writes",
    default=None,
    help="Write raw bytes from the event loop [inline] or through the I/O thread pool.",
)
@click.option("--checkpoint-bytes", type=int, help="Bytes between checkpoints [64 MiB].")
@click.option("--checkpoint-seconds", type=float, help="Seconds between checkpoints [1].")
@click.option("--idle-timeout", type=float, help="Seconds a connection may idle [60].")
@click.option("--raw-stall-timeout", type=float, help="Seconds raw bytes may stall [30].")
@click.option("--packet-timeout", type=float, help="Seconds a packet may take to arrive [30].")
@click.option("--lease-seconds", type=float, help="Lease of a stream's owner [5].")
@click.option("--sweep-interval", type=float, help="Seconds between sweeps of expired data [60].")
@click.option("--log-level", help="DEBUG, INFO, WARNING... [INFO].")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="Human-readable lines, or one JSON object per line [text].",
)
@click.option("--workers", type=int, help="Server processes on the same ports, supervised [1].")
def main(app_spec: str | None, app_dir: Path | None, **options: Any) -> None:
    """Run the xstream resumable upload server."""
    given = {name: value for name, value in options.items() if value is not None}
    if app_spec is not None:
        given["app"] = app_spec
    try:
        settings = ServerSettings(**given)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from exc
    worker = worker_overrides()
    if worker is not None:  # one of a supervisor's workers: its ports, its Redis
        settings = settings.model_copy(update=worker[2])
    if not isinstance(logging.getLevelName(settings.log_level.upper()), int):
        raise click.BadParameter(
            f"{settings.log_level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
            param_hint="--log-level",
        )
    configure_logging(settings.log_level, settings.log_format)
    # As uvicorn's --app-dir: `--app mymodule:app` finds mymodule.py where the server starts.
    sys.path.insert(0, str((app_dir or Path.cwd()).resolve()))
    try:
        app = load_app(settings.app)
    except (ImportError, AttributeError, TypeError) as exc:
        raise click.UsageError(f"cannot load app {settings.app!r}: {exc}") from exc
    except ConfigurationError as exc:
        raise click.ClickException(f"app {settings.app!r}: {exc}") from exc
    try:
        if settings.workers > 1:
            uvloop.run(_supervise(Supervisor(settings, sys.argv[1:])))
        else:
            server = Server(app, settings)
            if worker is not None:
                server.role = f"worker {worker[0]} serving"
            uvloop.run(_serve(server, worker[1] if worker is not None else None))
    except (EmbeddedRedisError, WorkerStartFailed) as exc:
        # e.g. another server runs on the data directory
        raise click.ClickException(str(exc)) from exc
    except _Unlistenable as exc:
        raise click.ClickException(
            f"cannot listen on {settings.host}:{settings.port}: {exc.__cause__}"
        ) from exc


class _Unlistenable(Exception):
    """The server could not bind its address (in use, not this machine's)."""


async def _supervise(supervisor: Supervisor) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, supervisor.stop)
    try:
        await supervisor.run()
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            raise _Unlistenable() from exc
        raise


async def _serve(server: Server, ready_fd: int | None = None) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await server.start()
    except Exception as exc:
        await server.close()
        if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            raise _Unlistenable() from exc
        raise
    report_ready(ready_fd)
    await stopping.wait()
    await server.close()


if __name__ == "__main__":
    main()
