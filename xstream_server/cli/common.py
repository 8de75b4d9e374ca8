"""What the ``xstream`` commands share: exit codes, human and JSON output, the mapping of
client errors onto exit codes, the common options, the progress bar and the stop signals."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

import click
from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]  # no stubs in dev deps

from ..client import (
    DEFAULT_SERVER,
    ClientError,
    ConnectionFailedError,
    ConnectionLostError,
    IntegrityError,
    Progress,
    ServerProtocolError,
    UploadResult,
    XStreamError,
    parse_address,
)
from ..client.errors import ChecksumMismatchError

EXIT_OK: Final = 0
EXIT_SERVER_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONNECTION: Final = 3
EXIT_INTEGRITY: Final = 4
EXIT_PROTOCOL: Final = 5
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT
EXIT_TERMINATED: Final = 143  # 128 + SIGTERM

EXIT_CODES_HELP: Final = """\b
Exit codes:
  0    success
  1    the server answered with an error status (refused, not found, ...)
  2    usage error (bad option or argument, unreadable file)
  3    the server could not be reached, or the connection kept failing
       after every retry; run the same command again to resume
  4    integrity: the server's sha256 differs from the file's, or the
       server discarded the stream (460)
  5    the server broke the wire protocol
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM); the upload is
       resumable: run the same command again
"""


class Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Output:
    json_mode: bool
    quiet: bool

    def note(self, message: str) -> None:
        """Chatter for humans: stderr, silenced by --quiet and --json."""
        if not self.quiet and not self.json_mode:
            click.echo(message, err=True)

    def event(self, kind: str, **fields: Any) -> None:
        if self.json_mode:
            click.echo(json.dumps({"event": kind, **fields}, default=jsonable))

    def document(self, value: Any) -> None:
        click.echo(json.dumps(value, default=jsonable))

    def fail(self, code: int, message: str, **fields: Any) -> NoReturn:
        click.echo(f"xstream: {message}", err=True)
        self.event("error", exit_code=code, message=message, **fields)
        raise Exit(code)


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        if not value:
            return None
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def server_errors(out: Output, exc: BaseException, key: str | None = None) -> NoReturn:
    """Map a client exception onto an exit code and message."""
    if isinstance(exc, XStreamError):
        code = EXIT_INTEGRITY if isinstance(exc, ChecksumMismatchError) else EXIT_SERVER_ERROR
        out.fail(code, f"error {exc.status}: {exc.message}", status=exc.status, key=key)
    if isinstance(exc, IntegrityError):
        out.fail(EXIT_INTEGRITY, str(exc), key=key)
    if isinstance(exc, ConnectionFailedError | ConnectionLostError):
        out.fail(EXIT_CONNECTION, str(exc), key=key)
    if isinstance(exc, ServerProtocolError):
        out.fail(EXIT_PROTOCOL, f"protocol violation by the server: {exc}", key=key)
    if isinstance(exc, ClientError):
        out.fail(EXIT_USAGE, str(exc), key=key)
    raise exc


def run_command(make: Callable[[], Coroutine[Any, Any, int]]) -> NoReturn:
    try:
        code = asyncio.run(make())
    except Exit as exc:
        code = exc.code
    except KeyboardInterrupt:
        click.echo("xstream: interrupted", err=True)
        code = EXIT_INTERRUPTED
    sys.exit(code)


def resolve_server(ctx: click.Context, server: str | None) -> str:
    chosen = server or ctx.obj["server"]
    try:
        host, port = parse_address(chosen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--server") from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def output_for(ctx: click.Context, quiet: bool, json_mode: bool) -> Output:
    return Output(json_mode=json_mode or ctx.obj["json"], quiet=quiet or ctx.obj["quiet"])


# The options several commands take (typed, so that mypy checks the commands they wrap).
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

server_option: Decorator = click.option(
    "--server", "-s", metavar="HOST:PORT", help=f"server address [default: {DEFAULT_SERVER}]"
)
quiet_option: Decorator = click.option("--quiet", "-q", is_flag=True, help="no progress, no notes")
TRANSPORTS = click.Choice(["tcp", "utp"])


def set_transport(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(dict)["transport"] = value
        ctx.obj["transport_given"] = True


def transport_given(ctx: click.Context) -> bool:
    """Whether --transport (or XSTREAM_TRANSPORT) was given, before or after the command."""
    group = ctx.parent
    source = group.get_parameter_source("transport") if group is not None else None
    given = source is not None and source is not click.core.ParameterSource.DEFAULT
    return given or bool(ctx.obj.get("transport_given"))


# After a command as before it: ``xstream upload big.iso --transport utp``.
transport_option: Decorator = click.option(
    "--transport",
    type=TRANSPORTS,
    expose_value=False,
    callback=set_transport,
    help="tcp, or utp (uTP over UDP: HOST:PORT is then the server's --utp-port)",
)


class StopSignals:
    """While in it, SIGINT and SIGTERM cancel the running task; ``caught`` tells a
    cancellation they caused from any other."""

    def __enter__(self) -> StopSignals:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._signals: list[int] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(signum, self._stop, signum)
        return self

    def _stop(self, signum: int) -> None:
        self._signals.append(signum)
        self._task.cancel()

    def caught(self) -> int | None:
        """Call in ``except asyncio.CancelledError``: the signal that stopped the task (the
        cancellation is then taken back), or None when no signal caused it (re-raise)."""
        if not self._signals:
            return None
        self._task.uncancel()
        return self._signals[0]

    def __exit__(self, *exc: object) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._loop.remove_signal_handler(signum)


def print_result(result: UploadResult, out: Output) -> None:
    if out.json_mode:
        out.event(
            "done",
            key=result.key,
            size=result.size,
            sha256=result.sha256,
            payload=result.payload,
            resumed_from=result.resumed_from,
            windows=result.windows,
            reconnects=result.reconnects,
        )
    elif out.quiet:
        click.echo(result.key)
    else:
        click.echo(f"done {result.key}")
        click.echo(f"  size    {result.size} bytes")
        click.echo(f"  sha256  {result.sha256}")
        if result.resumed_from:
            click.echo(f"  resumed from byte {result.resumed_from}")
        if result.payload not in (None, b"", ""):
            click.echo(f"  result  {json.dumps(result.payload, default=jsonable)}")


class ProgressBar:
    """tqdm showing bytes sent, rate and time left; notes the confirmed bytes too."""

    def __init__(self, total: int, *, disabled: bool, confirmed: bool = True) -> None:
        self._confirmed = confirmed
        self._bar: tqdm[Any] = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            dynamic_ncols=True,
            disable=True if disabled else None,  # None: only on a terminal
            file=sys.stderr,
        )
        self._started = False
        self._disabled = disabled

    def update(self, progress: Progress) -> None:
        bar = self._bar
        if self._disabled:
            return
        if not self._started:
            # The first snapshot is where the server's stored prefix ends: the rate counts
            # from there, not from zero.
            self._started = True
            bar.reset(total=progress.total)
            bar.initial = bar.n = progress.sent
        else:
            bar.update(progress.sent - bar.n)
        if self._confirmed and progress.total:
            bar.set_postfix_str(f"confirmed {progress.acknowledged * 100 // progress.total}%")

    def write(self, message: str, *, stdout: bool = False) -> None:
        self._bar.write(message, file=sys.stdout if stdout else sys.stderr)

    def close(self) -> None:
        self._bar.close()
