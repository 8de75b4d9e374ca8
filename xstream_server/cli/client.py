"""``xstream`` — upload files to an x-stream server and download them back, resuming where
an earlier run stopped; ``xstream token`` issues bearer tokens on the server's machine.

Human output goes to stderr (progress bar, notes) and stdout (the key, the result); with
``--json`` stdout carries one JSON object per line instead (``event``: ``key``, ``retry``,
``restart`` (a saved key the server refused: a new upload begins), ``done``,
``interrupted``, ``error``; ``status`` and ``request`` print one object).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import click
from pydantic import ValidationError

from ..client import (
    DEFAULT_ROUTE,
    DEFAULT_SERVER,
    ClientError,
    IntegrityError,
    RetryPolicy,
    StreamConflictError,
    StreamGoneError,
    Upload,
    XStreamError,
    connect,
    download,
    partial_path,
)
from ..client.connection import Transport
from ..client.errors import ChecksumMismatchError
from ..client.resume_state import FileIdentity, ResumeStore, SavedUpload
from ..identity import issue_token, parse_duration, server_secret, valid_principal
from ..settings import ServerSettings
from .common import (
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER_ERROR,
    EXIT_TERMINATED,
    EXIT_USAGE,
    TRANSPORTS,
    Output,
    ProgressBar,
    StopSignals,
    jsonable,
    output_for,
    print_result,
    quiet_option,
    resolve_server,
    run_command,
    server_errors,
    server_option,
    transport_given,
    transport_option,
)

__all__ = ["main"]


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--server",
    "-s",
    envvar="XSTREAM_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    metavar="HOST:PORT",
    help="server address (env XSTREAM_SERVER)",
)
@click.option(
    "--authorization",
    "-A",
    envvar="XSTREAM_AUTHORIZATION",
    metavar="CREDENTIAL",
    help="the authorization header of every request, e.g. 'Bearer <token>' (env "
    "XSTREAM_AUTHORIZATION, which other users cannot see in the process list)",
)
@click.option(
    "--transport",
    envvar="XSTREAM_TRANSPORT",
    type=TRANSPORTS,
    default="tcp",
    show_default=True,
    help="tcp, or utp: uTP over UDP (env XSTREAM_TRANSPORT)",
)
@click.option("--json", "json_mode", is_flag=True, help="machine-readable JSON on stdout")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar, no notes")
@click.version_option(package_name="xstream", prog_name="xstream")
@click.pass_context
def main(
    ctx: click.Context,
    server: str,
    authorization: str | None,
    transport: str,
    json_mode: bool,
    quiet: bool,
) -> None:
    """Client of x-stream upload servers.

    Uploads resume by themselves after a dropped connection; an interrupted command, run
    again with the same file, server and route, continues from what the server stored
    (the key is kept in $XSTREAM_STATE_DIR, else $XDG_STATE_HOME/xstream, else
    ~/.local/state/xstream).
    """
    ctx.obj = {
        "server": server,
        "transport": transport,
        "json": json_mode,
        "quiet": quiet,
        "authorization": authorization,
    }


# -- upload --------------------------------------------------------------------------------


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@server_option
@transport_option
@click.option("--route", default=DEFAULT_ROUTE, show_default=True, help="stream route")
@click.option("--name", help="name sent to the route [default: the file's name]")
@click.option(
    "--header",
    "-H",
    "headers",
    multiple=True,
    metavar="NAME=VALUE",
    help="extra metadata header for the route (repeatable)",
)
@click.option("--fresh", is_flag=True, help="ignore a saved key; start a new stream")
@click.option(
    "--key",
    "-k",
    metavar="KEY",
    help="resume the stream KEY (as printed by an earlier run, on any transport or address "
    "of the same server) instead of looking up a saved key",
)
@click.option("--retries", default=8, show_default=True, help="reconnects without progress")
@click.option("--retry-delay", default=0.5, show_default=True, help="first backoff, seconds")
@click.option(
    "--buffer-size",
    default=1024 * 1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="bytes per write",
)
@click.option("--checksum", is_flag=True, help="announce the sha256 first (reads FILE twice)")
@click.option("--json", "json_mode", is_flag=True, help="machine-readable JSON lines on stdout")
@quiet_option
@click.pass_context
def upload(
    ctx: click.Context,
    file: Path,
    server: str | None,
    route: str,
    name: str | None,
    headers: tuple[str, ...],
    fresh: bool,
    key: str | None,
    retries: int,
    retry_delay: float,
    buffer_size: int,
    checksum: bool,
    json_mode: bool,
    quiet: bool,
) -> None:
    """Upload FILE; prints the key as soon as it is granted, then the result.

    Ctrl-C, a dropped network or a killed process leave the upload resumable: run the
    same command again and it continues from the server's durable offset. The saved key is
    found for the same host on another port too, so a stream begun with --transport utp
    resumes over TCP and the other way round; --key KEY names the stream outright. A key
    the server does not know (expired, or another server) starts a new upload, with a note.
    """
    if fresh and key is not None:
        raise click.UsageError("give --fresh or --key, not both")
    out = output_for(ctx, quiet, json_mode)
    address = resolve_server(ctx, server)
    metadata = _parse_headers(headers)
    if name is not None:
        metadata["name"] = name
    options = _UploadOptions(
        address,
        route,
        metadata,
        fresh,
        RetryPolicy(retries, retry_delay),
        buffer_size,
        checksum,
        ctx.obj["authorization"],
        ctx.obj["transport"],
        key,
    )
    run_command(lambda: _upload(file, options, out, ResumeStore()))


@dataclass(frozen=True)
class _UploadOptions:
    server: str
    route: str
    metadata: dict[str, str | int]
    fresh: bool
    retry: RetryPolicy
    buffer_size: int
    announce_checksum: bool
    authorization: str | None
    transport: Transport = "tcp"
    key: str | None = None


def _parse_headers(items: tuple[str, ...]) -> dict[str, str | int]:
    headers: dict[str, str | int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--header")
        headers[name.strip().lower()] = value.strip()
    return headers


async def _upload(file: Path, options: _UploadOptions, out: Output, store: ResumeStore) -> int:
    identity = FileIdentity.of(file)
    saved = _saved_upload(identity, options, out, store)
    while True:
        try:
            return await _upload_once(file, identity, saved, options, out, store)
        except (StreamGoneError, StreamConflictError) as exc:
            if saved is None:
                raise
            # The key expired, belongs to another server, or no longer fits: start over,
            # once. An entry saved for another address may still be good there: kept.
            if saved.server == options.server or options.key is not None:
                store.remove(saved.key)
            where = "" if saved.server == options.server else f" (saved for {saved.server})"
            out.note(
                f"xstream: {options.server} does not resume key {saved.key}{where}: "
                f"{exc.status} {exc.message}; starting a new upload"
            )
            out.event("restart", key=saved.key, status=exc.status, message=exc.message)
            saved = None


def _saved_upload(
    identity: FileIdentity, options: _UploadOptions, out: Output, store: ResumeStore
) -> SavedUpload | None:
    """The stream to resume: ``--key``, else the key saved for this file and route on this
    address, else on another address of the same host (another transport)."""
    if options.key is not None:
        entry = store.by_key(options.key)
        if entry is not None and (entry.file.path, entry.file.size) != (
            identity.path,
            identity.size,
        ):
            out.fail(
                EXIT_USAGE,
                f"key {options.key} was saved for {entry.file.path} ({entry.file.size} "
                f"bytes), not {identity.path} ({identity.size} bytes)",
                key=options.key,
            )
        return entry or store.new_entry(
            options.key, options.server, options.route, identity, options.transport
        )
    if options.fresh:
        return None
    saved = store.find(options.server, options.route, identity)
    if saved is not None and saved.server != options.server:
        out.note(
            f"resuming key {saved.key}, begun on {saved.server} over {saved.transport}, "
            f"on {options.server} over {options.transport}"
        )
    return saved


async def _upload_once(
    file: Path,
    identity: FileIdentity,
    saved: SavedUpload | None,
    options: _UploadOptions,
    out: Output,
    store: ResumeStore,
) -> int:
    bar = ProgressBar(identity.size, disabled=out.quiet or out.json_mode)

    def on_key(key: str) -> None:
        store.save(store.new_entry(key, options.server, options.route, identity, options.transport))
        _announce_key(key, resumed=False)

    def _announce_key(key: str, *, resumed: bool) -> None:
        if out.json_mode:
            out.event("key", key=key, resumed=resumed)
        elif not out.quiet:
            bar.write(f"key {key}" + (" (resuming)" if resumed else ""), stdout=True)

    def on_retry(attempt: int, delay: float, error: Exception) -> None:
        out.event("retry", attempt=attempt, delay=round(delay, 3), reason=str(error))
        if not out.quiet and not out.json_mode:
            bar.write(f"connection lost ({error}); retry {attempt} in {delay:.1f} s")

    uploader = Upload(
        file,
        server=options.server,
        route=options.route,
        key=saved.key if saved else None,
        metadata=options.metadata,
        buffer_size=options.buffer_size,
        retry=options.retry,
        on_progress=bar.update,
        on_key=on_key,
        on_retry=on_retry,
        announce_checksum=options.announce_checksum,
        authorization=options.authorization,
        transport=options.transport,
    )
    if saved is not None:
        _announce_key(saved.key, resumed=True)

    with StopSignals() as stop:
        try:
            result = await uploader.run()
        except asyncio.CancelledError:
            signum = stop.caught()
            if signum is None:
                raise
            return _interrupted(uploader, signum, out, store, options, identity)
        except (IntegrityError, ChecksumMismatchError) as exc:
            if uploader.key is not None:
                store.remove(uploader.key)  # the stored content is wrong; resuming cannot fix it
            server_errors(out, exc, uploader.key)
        except (StreamGoneError, StreamConflictError):
            raise
        except (XStreamError, ClientError) as exc:
            server_errors(out, exc, uploader.key)
        except ValueError as exc:  # metadata that cannot be put in a header
            out.fail(EXIT_USAGE, str(exc))
        finally:
            bar.close()
    store.remove(result.key)
    print_result(result, out)
    return EXIT_OK


def _interrupted(
    uploader: Upload,
    signum: int,
    out: Output,
    store: ResumeStore,
    options: _UploadOptions,
    identity: FileIdentity,
) -> int:
    progress = uploader.progress
    key = uploader.key
    if key is not None:
        entry = store.by_key(key) or store.new_entry(
            key, options.server, options.route, identity, options.transport
        )
        store.save(dataclasses.replace(entry, acknowledged=progress.acknowledged))
    name = signal.Signals(signum).name
    click.echo(
        f"xstream: {name}: stopped at {progress.acknowledged} of {progress.total} bytes "
        "confirmed; run the same command again to resume",
        err=True,
    )
    out.event(
        "interrupted",
        signal=name,
        key=key,
        acknowledged=progress.acknowledged,
        total=progress.total,
    )
    return EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_TERMINATED


# -- status --------------------------------------------------------------------------------

STATUS_ROUTE: Final = "/stream-status"


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("key")
@server_option
@transport_option
@click.option("--json", "json_mode", is_flag=True, help="machine-readable JSON on stdout")
@quiet_option
@click.pass_context
def status(ctx: click.Context, key: str, server: str | None, json_mode: bool, quiet: bool) -> None:
    """Show how far the stream KEY got.

    Asks the server's /stream-status route; a server without it gets a note, and what
    the local state file knows about KEY is shown instead.
    """
    out = output_for(ctx, quiet, json_mode)
    store = ResumeStore()
    saved = store.by_key(key)
    transport = ctx.obj["transport"]
    if server is None and saved is not None:
        # Where the stream was begun, over what it was begun.
        server = saved.server
        if not transport_given(ctx) and saved.transport in ("tcp", "utp"):
            transport = saved.transport
    address = resolve_server(ctx, server)
    run_command(lambda: _status(key, address, saved, out, ctx.obj["authorization"], transport))


async def _status(
    key: str,
    server: str,
    saved: SavedUpload | None,
    out: Output,
    authorization: str | None,
    transport: Transport = "tcp",
) -> int:
    try:
        async with connect(server, transport=transport) as conn:
            reply = await conn.request(STATUS_ROUTE, json={"key": key}, authorization=authorization)
    except XStreamError as exc:
        if exc.status != 404:
            server_errors(out, exc, key)
        if saved is None:
            out.fail(
                EXIT_SERVER_ERROR,
                f"{server} has no {STATUS_ROUTE} route and {key} is not in the local state",
                status=exc.status,
                key=key,
            )
        out.note(f"note: {server} has no {STATUS_ROUTE} route; showing the local record")
        _print_saved(saved, out)
        return EXIT_OK
    except ClientError as exc:
        if saved is not None:
            _print_saved(saved, out)
        server_errors(out, exc, key)
    info = reply.content
    if out.json_mode:
        out.document({"source": "server", **info} if isinstance(info, dict) else info)
    elif isinstance(info, dict):
        for field_name, value in info.items():
            if value is not None:
                click.echo(f"{field_name:<8} {value}")
        total, offset = info.get("total"), info.get("offset")
        if isinstance(total, int) and isinstance(offset, int) and total > 0:
            click.echo(f"{'stored':<8} {offset * 100 / total:.1f}%")
    else:
        click.echo(json.dumps(info, default=jsonable))
    return EXIT_OK


def _print_saved(saved: SavedUpload, out: Output) -> None:
    if out.json_mode:
        out.document({"source": "local", **saved.to_json()})
        return
    click.echo(f"key      {saved.key}")
    click.echo(f"server   {saved.server}")
    click.echo(f"route    {saved.route}")
    click.echo(f"file     {saved.file.path}")
    click.echo(f"total    {saved.file.size}")
    click.echo(f"offset   {saved.acknowledged} (last confirmed to this machine)")
    click.echo("state    unfinished (local record)")


# -- request -------------------------------------------------------------------------------


_OLD_JSON_PAYLOAD: Final = (
    "--json asks for JSON output, as in every command; send a JSON payload with "
    "--payload-json, e.g. xstream request ROUTE --payload-json '{\"a\": 1}'"
)


@main.command(
    epilog=EXIT_CODES_HELP,
    context_settings={"allow_extra_args": True},
)
@click.argument("route")
@server_option
@transport_option
@click.option("--payload-json", "json_payload", metavar="JSON", help="send this JSON value")
@click.option("--payload-text", "--text", "text_payload", metavar="TEXT", help="send this text")
@click.option(
    "--payload-file",
    "--data",
    "data_file",
    type=click.File("rb"),
    metavar="FILE",
    help="send the bytes of FILE ('-' for stdin)",
)
@click.option("--header", "-H", "headers", multiple=True, metavar="NAME=VALUE")
@click.option("--id", "request_id", help="request id, echoed by the server")
@click.option(
    "--json",
    "json_mode",
    is_flag=True,
    help="the whole reply (status, headers, payload) as JSON on stdout",
)
@quiet_option
@click.pass_context
def request(
    ctx: click.Context,
    route: str,
    server: str | None,
    json_payload: str | None,
    text_payload: str | None,
    data_file: BinaryIO | None,
    headers: tuple[str, ...],
    request_id: str | None,
    json_mode: bool,
    quiet: bool,
) -> None:
    """Send one ordinary request to ROUTE and print the reply's payload.

    The payload is --payload-json, --payload-text or --payload-file (at most one); --json
    prints the whole reply (status, headers, payload) as JSON, as `xstream --json request`.
    """
    if ctx.args:
        if json_mode:  # the spelling of earlier versions: --json '<payload>'
            raise click.UsageError(_OLD_JSON_PAYLOAD)
        raise click.UsageError(f"unexpected argument {ctx.args[0]!r}")
    out = output_for(ctx, quiet, json_mode)
    given = [p for p in (json_payload, text_payload, data_file) if p is not None]
    if len(given) > 1:
        raise click.UsageError("give at most one of --payload-json, --payload-text, --payload-file")
    body: dict[str, Any] = {}
    if json_payload is not None:
        try:
            body["json"] = json.loads(json_payload)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload-json") from None
    elif text_payload is not None:
        body["text"] = text_payload
    elif data_file is not None:
        body["data"] = data_file.read()
    address = resolve_server(ctx, server)
    metadata = _parse_headers(headers)
    authorization = ctx.obj["authorization"]
    transport = ctx.obj["transport"]
    run_command(
        lambda: _request(route, address, body, metadata, request_id, authorization, out, transport)
    )


async def _request(
    route: str,
    server: str,
    body: dict[str, Any],
    metadata: dict[str, str | int],
    request_id: str | None,
    authorization: str | None,
    out: Output,
    transport: Transport = "tcp",
) -> int:
    try:
        async with connect(server, transport=transport) as conn:
            reply = await conn.request(
                route,
                **body,
                metadata=metadata,
                id=request_id,
                authorization=authorization,
                check=False,
            )
    except (XStreamError, ClientError) as exc:
        server_errors(out, exc)
    except ValueError as exc:  # a header that cannot be put on the wire
        out.fail(EXIT_USAGE, str(exc))
    if out.json_mode:
        out.document(
            {"status": reply.status, "headers": dict(reply.headers), "payload": reply.content}
        )
    if reply.status != 0:
        message = reply.message or "(no message)"
        if not out.json_mode:
            click.echo(f"xstream: error {reply.status}: {message}", err=True)
        return EXIT_SERVER_ERROR
    if not out.json_mode:
        content = reply.content
        if isinstance(content, bytes):
            sys.stdout.buffer.write(content)
            sys.stdout.flush()
        elif isinstance(content, str):
            click.echo(content)
        else:
            click.echo(json.dumps(content, indent=2, default=jsonable))
    return EXIT_OK


# -- get -----------------------------------------------------------------------------------


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("key")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="where to write the content [default: KEY in the current folder]",
)
@server_option
@transport_option
@click.option("--route", default=DEFAULT_ROUTE, show_default=True, help="route to pull from")
@click.option("--retries", default=8, show_default=True, help="reconnects without progress")
@click.option("--retry-delay", default=0.5, show_default=True, help="first backoff, seconds")
@click.option("--json", "json_mode", is_flag=True, help="machine-readable JSON lines on stdout")
@quiet_option
@click.pass_context
def get(
    ctx: click.Context,
    key: str,
    output: Path | None,
    server: str | None,
    route: str,
    retries: int,
    retry_delay: float,
    json_mode: bool,
    quiet: bool,
) -> None:
    """Download the content of KEY (on the default route: a completed upload).

    Bytes gather in OUTPUT.part and it becomes OUTPUT once its sha256 matches the
    server's. An interrupted download (Ctrl-C, a dropped network) resumes from the
    partial file: run the same command again.
    """
    out = output_for(ctx, quiet, json_mode)
    address = resolve_server(ctx, server)
    target = output if output is not None else Path(key)
    run_command(
        lambda: _get(
            key,
            target,
            address,
            route,
            RetryPolicy(retries, retry_delay),
            ctx.obj["authorization"],
            ctx.obj["transport"],
            out,
        )
    )


async def _get(
    key: str,
    target: Path,
    server: str,
    route: str,
    retry: RetryPolicy,
    authorization: str | None,
    transport: Transport,
    out: Output,
) -> int:
    bar = ProgressBar(0, disabled=out.quiet or out.json_mode, confirmed=False)

    def on_retry(attempt: int, delay: float, error: Exception) -> None:
        out.event("retry", attempt=attempt, delay=round(delay, 3), reason=str(error))
        if not out.quiet and not out.json_mode:
            bar.write(f"connection lost ({error}); retry {attempt} in {delay:.1f} s")

    with StopSignals() as stop:
        try:
            result = await download(
                key,
                target,
                server=server,
                route=route,
                authorization=authorization,
                retry=retry,
                on_progress=bar.update,
                on_retry=on_retry,
                transport=transport,
            )
        except asyncio.CancelledError:
            signum = stop.caught()
            if signum is None:
                raise
            part = partial_path(target)
            held = part.stat().st_size if part.exists() else 0
            name = signal.Signals(signum).name
            click.echo(
                f"xstream: {name}: stopped with {held} bytes in {part}; run the same command "
                "again to resume",
                err=True,
            )
            out.event("interrupted", signal=name, key=key, received=held)
            return EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_TERMINATED
        except (XStreamError, ClientError) as exc:
            server_errors(out, exc, key)
        except OSError as exc:
            out.fail(EXIT_USAGE, f"cannot write {target}: {exc}")
        finally:
            bar.close()
    if out.json_mode:
        out.event(
            "done",
            key=result.key,
            path=result.path,
            size=result.size,
            sha256=result.sha256,
            verified=result.verified,
            resumed_from=result.resumed_from,
            reconnects=result.reconnects,
        )
    elif not out.quiet:
        check = "verified" if result.verified else "not announced by the server"
        click.echo(f"{result.path}  {result.size} bytes  sha256 {result.sha256} ({check})")
    return EXIT_OK


# -- token ---------------------------------------------------------------------------------


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("principal")
@click.option(
    "--ttl",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="how long the token is valid: 90s, 15m, 1h, 7d...",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="the server's data directory, where its secret is kept (env XSTREAM_DATA_DIR) "
    "[./data]; XSTREAM_AUTH_SECRET, when set, is used instead",
)
@click.option("--json", "json_mode", is_flag=True, help="machine-readable JSON on stdout")
@click.pass_context
def token(
    ctx: click.Context, principal: str, ttl: str, data_dir: Path | None, json_mode: bool
) -> None:
    """Issue a bearer token for PRINCIPAL (like @alice), signed with the server's secret.

    Run it where the server runs (it reads the secret from the server's data directory,
    making it on first use, or from XSTREAM_AUTH_SECRET). Use the token with
    -A 'Bearer <token>' or XSTREAM_AUTHORIZATION.
    """
    out = output_for(ctx, False, json_mode)
    if not valid_principal(principal):
        raise click.BadParameter(
            f"{principal!r}: '@' then 1-64 of a-z 0-9 _ . -", param_hint="PRINCIPAL"
        )
    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    try:
        settings = ServerSettings() if data_dir is None else ServerSettings(data_dir=data_dir)
        secret = server_secret(settings)
    except (ValidationError, ValueError, OSError, RuntimeError) as exc:
        click.echo(f"xstream: cannot read the server's secret: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    now = time.time()
    issued = issue_token(secret, principal, seconds, now=now)
    if out.json_mode:
        out.document({"principal": principal, "token": issued, "expires": int(now + seconds)})
    else:
        click.echo(issued)


if __name__ == "__main__":
    # Run the module's importable copy: the people commands attach to that one's group.
    from xstream_server.cli.client import main as _main

    _main()
else:
    # The commands of files between people (send, monitor, inbox, accept, deny, online).
    from .people import COMMANDS as _PEOPLE_COMMANDS

    for _name, _command in _PEOPLE_COMMANDS:
        main.add_command(_command, _name)
