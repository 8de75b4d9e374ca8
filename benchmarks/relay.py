"""Live relay throughput: @alice sends a file to @bob, who pulls it while it is uploaded,
against a plain upload of the same file (one in-process server, embedded Redis, loopback).

    .venv/bin/python -m benchmarks.relay [--size MiB] [--fsync]

Prints MB/s of the plain upload, and of the relay (from the first byte sent until the
receiver holds the last one, both ends in this process with the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import uvloop

from xstream_server import TokenAuth
from xstream_server.app import App
from xstream_server.client import upload
from xstream_server.client.people import people, receive, send
from xstream_server.identity import issue_token
from xstream_server.server import Server
from xstream_server.settings import ServerSettings
from xstream_server.social import install

SECRET = "benchmark-secret-" + "0" * 32
MiB = 1024 * 1024


def _write_random(path: Path, size: int) -> None:
    with open(path, "wb") as file:
        for _ in range(size // MiB):
            file.write(os.urandom(MiB))


async def _run(size: int, fsync: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as data:
        source = Path(data) / "source.bin"
        _write_random(source, size)
        app = App()
        install(app, TokenAuth(SECRET))

        @app.stream("/plain")
        async def plain(_: object) -> None:
            return None

        settings = ServerSettings(
            host="127.0.0.1", port=0, http=False, data_dir=Path(data) / "server", fsync=fsync
        )
        async with Server(app, settings) as server:
            address = f"127.0.0.1:{server.port}"
            alice = f"Bearer {issue_token(SECRET, '@alice')}"
            bob_token = f"Bearer {issue_token(SECRET, '@bob')}"
            started = time.perf_counter()
            await upload(str(source), server=address, route="/plain")
            plain_seconds = time.perf_counter() - started

            async with await people(address, authorization=bob_token) as bob:
                await bob.monitor()
                started = time.perf_counter()
                sending = asyncio.create_task(
                    send(str(source), to="@bob", server=address, authorization=alice).run()
                )
                offer = await bob.next_notification()
                key = offer.payload["key"]
                await bob.accept(key)
                await receive(key, Path(data) / "got.bin", server=address, authorization=bob_token)
                relay_seconds = time.perf_counter() - started
                await sending
    mb = size / 1e6
    return {
        "size_mib": size // MiB,
        "plain_upload_mb_s": round(mb / plain_seconds, 1),
        "relay_mb_s": round(mb / relay_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256, help="MiB")
    parser.add_argument("--fsync", action="store_true")
    args = parser.parse_args()
    print(json.dumps(uvloop.run(_run(args.size * MiB, args.fsync))))


if __name__ == "__main__":
    main()
