"""``xstream send``, ``monitor``, ``inbox``, ``accept``, ``deny``, ``online``: files between
people (PROTOCOL §7, §8). Every command acts as the principal of ``--authorization``
(``XSTREAM_AUTHORIZATION='Bearer <token>'``, a token from ``xstream token @me``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Final

import click

from ..app import Notification
from ..client import ClientError, RetryPolicy, Upload, XStreamError
from ..client.people import SEND_ROUTE, People, people, receive
from .common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_SERVER_ERROR,
    EXIT_USAGE,
    Output,
    ProgressBar,
    output_for,
    print_result,
    quiet_option,
    resolve_server,
    run_command,
    server_errors,
    server_option,
    transport_option,
)

__all__ = ["COMMANDS", "accept", "deny", "inbox", "monitor", "online", "send"]

_FINAL: Final = frozenset({"stream-delivered", "stream-denied"})


def _authorization(ctx: click.Context, out: Output) -> str:
    authorization: str | None = ctx.obj["authorization"]
    if not authorization:
        out.fail(
            EXIT_USAGE,
            "this command acts as a person: give --authorization 'Bearer <token>' "
            "(or XSTREAM_AUTHORIZATION); a token comes from 'xstream token @me'",
        )
    return authorization


async def _me(ctx: click.Context, server: str | None, out: Output) -> People:
    address = resolve_server(ctx, server)
    try:
        return await people(
            address, authorization=_authorization(ctx, out), transport=ctx.obj["transport"]
        )
    except (XStreamError, ClientError) as exc:
        server_errors(out, exc)


def describe(note: Notification) -> str:
    """One line for a person to read."""
    p = note.payload if isinstance(note.payload, dict) else {}
    key = p.get("key", "?")
    if note.kind == "stream-offer":
        return f"{note.sender} offers {p.get('name')!r} ({p.get('size')} bytes), key {key}"
    if note.kind == "stream-accepted":
        return f"{note.sender} accepted {key}"
    if note.kind == "stream-denied":
        reason = p.get("reason")
        return f"{note.sender} denied {key}" + (f": {reason}" if reason else "")
    if note.kind == "stream-delivered":
        return (
            f"{p.get('to')} received all {p.get('size')} bytes of {key} (sha256 {p.get('sha256')})"
        )
    return f"{note.kind} from {note.sender}: {json.dumps(note.payload)}"


def _show(note: Notification, out: Output) -> None:
    if out.json_mode:
        out.event(
            "notification", id=note.id, type=note.kind, sender=note.sender, payload=note.payload
        )
    elif not out.quiet:
        click.echo(f"[{note.id}] {describe(note)}")


# -- send ----------------------------------------------------------------------------------


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("--to", "to", required=True, metavar="@NAME", help="the addressee")
@click.option("--name", help="the name the addressee sees [default: the file's name]")
@click.option("--no-wait", is_flag=True, help="end once uploaded; do not wait for delivery")
@server_option
@transport_option
@click.option("--json", "json_mode", is_flag=True, help="machine-readable JSON lines on stdout")
@quiet_option
@click.pass_context
def send(
    ctx: click.Context,
    file: Path,
    to: str,
    name: str | None,
    no_wait: bool,
    server: str | None,
    json_mode: bool,
    quiet: bool,
) -> None:
    """Send FILE to a person: upload it (resuming after drops), then wait until the
    addressee has received it. Says when the addressee accepts, denies or receives it;
    the upload goes on whether the addressee is online or not (store and forward)."""
    out = output_for(ctx, quiet, json_mode)
    run_command(lambda: _send(ctx, file, to, name, not no_wait, server, out))


async def _send(
    ctx: click.Context,
    file: Path,
    to: str,
    name: str | None,
    wait: bool,
    server: str | None,
    out: Output,
) -> int:
    size = file.stat().st_size  # noqa: ASYNC240 - one stat before anything starts
    me = await _me(ctx, server, out)
    async with me:
        try:
            await me.monitor()
        except (XStreamError, ClientError) as exc:
            server_errors(out, exc)
        key: list[str] = []
        heard: list[Notification] = []
        shown: set[str] = set()  # ids of the notifications already printed
        bar = ProgressBar(size, disabled=out.quiet or out.json_mode)
        uploading = True

        async def listen() -> None:
            async for note in me.notifications():
                heard.append(note)
                if uploading and key and note.payload.get("key") == key[0]:
                    if out.json_mode or out.quiet:
                        _show(note, out)
                    else:  # on stdout, above the progress bar while it runs
                        bar.write(f"[{note.id}] {describe(note)}", stdout=True)
                    shown.add(note.id)

        def on_key(granted: str) -> None:
            key.append(granted)
            bar.write(f"key {granted}")

        listener = asyncio.create_task(listen())
        metadata: dict[str, str | int] = {"to": to}
        if name is not None:
            metadata["name"] = name
        uploader = Upload(
            file,
            server=resolve_server(ctx, server),
            route=SEND_ROUTE,
            metadata=metadata,
            authorization=me.authorization,
            retry=RetryPolicy(),
            on_progress=bar.update,
            on_key=on_key,
            transport=ctx.obj["transport"],
        )
        try:
            result = await uploader.run()
        except (XStreamError, ClientError) as exc:
            listener.cancel()
            server_errors(out, exc, uploader.key)
        finally:
            uploading = False
            bar.close()
        print_result(result, out)
        for note in heard:  # those that came before the key was known
            mine = note.payload.get("key") == result.key
            if mine and note.kind not in _FINAL and note.id not in shown:
                _show(note, out)
                shown.add(note.id)
        code = EXIT_OK
        if wait:
            click.echo(f"waiting for {to} to receive it (Ctrl-C stops waiting)", err=True)
            code = await _wait_for_end(me, result.key, heard, shown, out)
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        ours = [n.id for n in heard if n.payload.get("key") == result.key]
        with contextlib.suppress(XStreamError, ClientError):
            await me.ack(ours)
        return code


async def _wait_for_end(
    me: People, key: str, heard: list[Notification], shown: set[str], out: Output
) -> int:
    seen = 0
    while True:
        for note in heard[seen:]:
            if note.payload.get("key") != key:
                continue
            if note.kind == "stream-accepted":
                if note.id not in shown:
                    _show(note, out)
                    shown.add(note.id)
            elif note.kind in _FINAL:
                _show(note, out)
                return EXIT_OK if note.kind == "stream-delivered" else EXIT_SERVER_ERROR
        seen = len(heard)
        if not me.connection.is_open:
            out.fail(3, "the connection to the server was lost while waiting")
        await asyncio.sleep(0.05)


# -- inbox and monitor ---------------------------------------------------------------------


@click.command(epilog=EXIT_CODES_HELP)
@click.option("--since", metavar="ID", help="only notifications after this id")
@click.option("--ack", is_flag=True, help="remove the notifications shown from the inbox")
@server_option
@transport_option
@click.option("--json", "json_mode", is_flag=True, help="machine-readable JSON lines on stdout")
@quiet_option
@click.pass_context
def inbox(
    ctx: click.Context,
    since: str | None,
    ack: bool,
    server: str | None,
    json_mode: bool,
    quiet: bool,
) -> None:
    """Show the notifications waiting in your inbox, and end."""
    out = output_for(ctx, quiet, json_mode)
    run_command(lambda: _inbox(ctx, since, ack, server, out))


async def _inbox(
    ctx: click.Context, since: str | None, ack: bool, server: str | None, out: Output
) -> int:
    me = await _me(ctx, server, out)
    async with me:
        try:
            await me.monitor(since)
            shown = []
            while True:  # what is waiting comes at once after the reply
                try:
                    async with asyncio.timeout(0.5):
                        note = await me.next_notification()
                except TimeoutError:
                    break
                _show(note, out)
                shown.append(note.id)
            if ack and shown:
                await me.ack(shown)
        except (XStreamError, ClientError) as exc:
            server_errors(out, exc)
        if not shown:
            out.note("no notifications")
    return EXIT_OK


@click.command(epilog=EXIT_CODES_HELP)
@click.option("--since", metavar="ID", help="only notifications after this id")
@click.option(
    "--accept-from",
    "accept_from",
    multiple=True,
    metavar="@NAME",
    help="accept offers from this sender without asking (repeatable)",
)
@click.option("--ask", is_flag=True, help="ask on the terminal whether to accept each offer")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="where accepted files are saved",
)
@server_option
@transport_option
@click.option("--json", "json_mode", is_flag=True, help="machine-readable JSON lines on stdout")
@quiet_option
@click.pass_context
def monitor(
    ctx: click.Context,
    since: str | None,
    accept_from: tuple[str, ...],
    ask: bool,
    directory: Path,
    server: str | None,
    json_mode: bool,
    quiet: bool,
) -> None:
    """Stay online and print notifications as they come; accept offers from the senders
    named with --accept-from, or ask with --ask (else just show them). Runs until Ctrl-C."""
    out = output_for(ctx, quiet, json_mode)
    run_command(lambda: _monitor(ctx, since, set(accept_from), ask, directory, server, out))


async def _monitor(
    ctx: click.Context,
    since: str | None,
    accept_from: set[str],
    ask: bool,
    directory: Path,
    server: str | None,
    out: Output,
) -> int:
    me = await _me(ctx, server, out)
    async with me:
        try:
            name = await me.monitor(since)
            out.note(f"monitoring as {name}; Ctrl-C to stop")
            async for note in me.notifications():
                _show(note, out)
                if note.kind == "stream-offer":
                    await _offered(me, note, accept_from, ask, directory, out)
                await me.ack([note.id])
        except (XStreamError, ClientError) as exc:
            server_errors(out, exc)
    out.fail(3, "the connection to the server was lost")


async def _offered(
    me: People,
    note: Notification,
    accept_from: set[str],
    ask: bool,
    directory: Path,
    out: Output,
) -> None:
    key = note.payload["key"]
    if note.sender in accept_from:
        take = True
    elif ask:
        loop = asyncio.get_running_loop()
        question = f"accept {note.payload.get('name')!r} from {note.sender}? [y/n] "
        answer = await loop.run_in_executor(None, _ask, question)
        take = answer
        if not take:
            await me.deny(key, "declined")
            out.note(f"denied {key}")
            return
    else:
        return
    if take:
        await me.accept(key)
        out.note(f"accepted {key}")
        await receive_offer(me, note, directory, out)


def _ask(question: str) -> bool:
    sys.stderr.write(question)
    sys.stderr.flush()
    line = sys.stdin.readline()
    return line.strip().lower() in ("y", "yes")


async def receive_offer(me: People, note: Notification, directory: Path, out: Output) -> None:
    """Download an accepted offer into ``directory``, with a progress bar."""
    name = Path(str(note.payload.get("name") or note.payload["key"])).name
    await download(me, note.payload["key"], directory / name, int(note.payload["size"]), out)


async def download(me: People, key: str, path: Path, size: int, out: Output) -> None:
    bar = ProgressBar(size, disabled=out.quiet or out.json_mode)
    server = me.connection_address

    try:
        received = await receive(
            key,
            path,
            server=server,
            authorization=me.authorization,
            on_progress=bar.update,
            transport=me.transport,
        )
    finally:
        bar.close()
    if out.json_mode:
        out.event(
            "received", key=key, path=str(received.path), size=received.size, sha256=received.sha256
        )
    else:
        click.echo(
            f"received {key} -> {received.path} ({received.size} bytes, sha256 {received.sha256})"
        )


# -- accept, deny --------------------------------------------------------------------------


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("key")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="download the file to PATH once accepted (resumes a download cut before)",
)
@server_option
@transport_option
@click.option("--json", "json_mode", is_flag=True, help="machine-readable JSON on stdout")
@quiet_option
@click.pass_context
def accept(
    ctx: click.Context,
    key: str,
    output: Path | None,
    server: str | None,
    json_mode: bool,
    quiet: bool,
) -> None:
    """Accept the file offered with KEY (the sender is told); with -o, download it."""
    out = output_for(ctx, quiet, json_mode)
    run_command(lambda: _answer(ctx, key, None, server, out, output))


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("key")
@click.option("--reason", help="told to the sender")
@server_option
@transport_option
@click.option("--json", "json_mode", is_flag=True, help="machine-readable JSON on stdout")
@quiet_option
@click.pass_context
def deny(
    ctx: click.Context,
    key: str,
    reason: str | None,
    server: str | None,
    json_mode: bool,
    quiet: bool,
) -> None:
    """Deny the file offered with KEY: the sender is told and the upload is discarded."""
    out = output_for(ctx, quiet, json_mode)
    run_command(lambda: _answer(ctx, key, reason or "", server, out))


async def _answer(
    ctx: click.Context,
    key: str,
    reason: str | None,
    server: str | None,
    out: Output,
    output: Path | None = None,
) -> int:
    me = await _me(ctx, server, out)
    async with me:
        try:
            if reason is None:
                answer = await me.accept(key)
            else:
                answer = await me.deny(key, reason or None)
            if out.json_mode:
                out.document(answer)
            else:
                click.echo(f"{answer['state']} {key}")
            if output is not None:
                await download(me, key, output, int(answer.get("size", 0)), out)
        except (XStreamError, ClientError) as exc:
            server_errors(out, exc, key)
    return EXIT_OK


# -- online --------------------------------------------------------------------------------


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("names", nargs=-1, metavar="[@NAME]...")
@click.option("--register", is_flag=True, help="be online yourself first (for 2 minutes)")
@click.option("--identity", help="with --register: an address others may see")
@server_option
@transport_option
@click.option("--json", "json_mode", is_flag=True, help="machine-readable JSON on stdout")
@quiet_option
@click.pass_context
def online(
    ctx: click.Context,
    names: tuple[str, ...],
    register: bool,
    identity: str | None,
    server: str | None,
    json_mode: bool,
    quiet: bool,
) -> None:
    """Who is online: everyone, or only the NAMES given."""
    out = output_for(ctx, quiet, json_mode)
    run_command(lambda: _online(ctx, names, register, identity, server, out))


async def _online(
    ctx: click.Context,
    names: tuple[str, ...],
    register: bool,
    identity: str | None,
    server: str | None,
    out: Output,
) -> int:
    me = await _me(ctx, server, out)
    async with me:
        try:
            if register:
                await me.register(identity)
            rows: list[dict[str, Any]] = await me.online(list(names) if names else None)
        except (XStreamError, ClientError) as exc:
            server_errors(out, exc)
    if out.json_mode:
        out.document(rows)
    else:
        for row in rows:
            click.echo(row["name"] + (f"  {row['identity']}" if row.get("identity") else ""))
        if not rows:
            out.note("nobody online" if not names else "none of them online")
    return EXIT_OK


# (name, command) pairs the ``xstream`` group adds; ``users`` is ``online`` by another name.
COMMANDS: Final = [
    ("send", send),
    ("monitor", monitor),
    ("inbox", inbox),
    ("accept", accept),
    ("deny", deny),
    ("online", online),
    ("users", online),
]
