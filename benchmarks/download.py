"""Download throughput over TCP on loopback (PROTOCOL §5).

Starts ``xstream-server`` (embedded Redis, fsync on) in a temporary data directory,
uploads one file of ``--size`` MiB, then pulls it back ``--repetitions`` times two ways:

* ``pull``: the client's ``ClientConnection.pull`` + ``read_content``, bytes dropped
  (what the server and the wire sustain);
* ``download``: the client's ``download()``, which writes ``PATH.part``, hashes every
  byte and checks the sha256 at the end (what a user of ``xstream get`` sees).

    .venv/bin/python -m benchmarks.download --size 256
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from xstream_server.client import connect, download, upload

MiB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_server(data_dir: Path) -> tuple[subprocess.Popen[str], int]:
    args = [sys.executable, "-m", "xstream_server.cli.server", "--host", "127.0.0.1"]
    args += ["--port", "0", "--no-http", "--data-dir", str(data_dir), "--log-level", "INFO"]
    process = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    stderr = process.stderr
    assert stderr is not None
    for line in stderr:
        match = re.search(r"listening on [\d.]+:(\d+)", line)
        if match:
            # Keep reading its log so that the pipe never fills.
            threading.Thread(target=lambda: [None for _ in stderr], daemon=True).start()
            return process, int(match.group(1))
    process.kill()
    raise RuntimeError("xstream-server did not start")


async def _pull_dropping(server: str, key: str) -> int:
    async with connect(server) as conn:
        grant = await conn.pull("/upload-file", key=key)
        received = 0
        while chunk := await conn.read_content():
            received += len(chunk)
        assert received == grant.size
        return received


async def measure(size_mib: int, repetitions: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="xs-download-") as work:
        root = Path(work)
        source = root / "source.bin"
        with source.open("wb") as file:
            for _ in range(size_mib):
                file.write(os.urandom(MiB))
        process, port = _start_server(root / "data")
        server = f"127.0.0.1:{port}"
        try:
            uploaded = await upload(source, server=server)
            runs: dict[str, list[float]] = {"pull": [], "download": []}
            for _ in range(repetitions):
                started = time.perf_counter()
                received = await _pull_dropping(server, uploaded.key)
                runs["pull"].append(received / MiB / (time.perf_counter() - started))
                target = root / "copy.bin"
                started = time.perf_counter()
                result = await download(uploaded.key, target, server=server)
                runs["download"].append(result.size / MiB / (time.perf_counter() - started))
                assert result.verified and result.sha256 == uploaded.sha256
                target.unlink()
        finally:
            process.terminate()
            process.wait(30)
    return {
        "size_mib": size_mib,
        "repetitions": repetitions,
        "MiB_per_s": {name: [round(v, 1) for v in values] for name, values in runs.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="MiB [256]")
    parser.add_argument("--repetitions", type=int, default=1)
    options = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(options.size, options.repetitions)), indent=2))


if __name__ == "__main__":
    main()
