"""Notification latency: from the moment a notification is added (a Redis Stream entry and
a pub/sub wake-up) until a monitor's client has parsed its packet.

    .venv/bin/python -m benchmarks.notifications [--count 500] [--processes]

One server (embedded Redis, fsync off) with the default app; @bob monitors over TCP; the
notifications are added through the server's ``PeopleService`` service, one at a time, each
waited for. With ``--processes`` they are added by a second server instance sharing the
Redis (the path of a send handled by another process). Prints median, p90, p99 and max.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import uvloop

from xstream_server import TokenAuth
from xstream_server.app import App
from xstream_server.client.people import people
from xstream_server.identity import issue_token
from xstream_server.server import Server
from xstream_server.settings import ServerSettings
from xstream_server.social import PeopleService, install

SECRET = "benchmark-secret-" + "0" * 32


def _app() -> tuple[App, PeopleService]:
    app = App()
    return app, install(app, TokenAuth(SECRET))


async def _run(count: int, processes: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as data:
        settings = ServerSettings(
            host="127.0.0.1", port=0, http=False, data_dir=Path(data), fsync=False
        )
        app, here = _app()
        async with Server(app, settings) as server:
            adder = here
            second: Server | None = None
            if processes:
                other_app, adder = _app()
                second = Server(
                    other_app,
                    ServerSettings(
                        host="127.0.0.1",
                        port=0,
                        http=False,
                        data_dir=Path(data) / "second",
                        redis_url=server.redis_url,
                        fsync=False,
                    ),
                )
                await second.start()
            token = f"Bearer {issue_token(SECRET, '@bob')}"
            latencies = []
            try:
                async with await people(f"127.0.0.1:{server.port}", authorization=token) as bob:
                    await bob.monitor()
                    for n in range(count + 20):
                        started = time.perf_counter()
                        await adder.notify("@bob", "ping", "@alice", {"n": n})
                        note = await bob.next_notification()
                        assert note.payload == {"n": n}
                        if n >= 20:  # the first ones warm up connections and scripts
                            latencies.append(time.perf_counter() - started)
            finally:
                if second is not None:
                    await second.close()
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {
        "count": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[int(len(ms) * 0.9)], 3),
        "p99_ms": round(ms[int(len(ms) * 0.99)], 3),
        "max_ms": round(ms[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--processes", action="store_true")
    args = parser.parse_args()
    print(json.dumps(uvloop.run(_run(args.count, args.processes))))


if __name__ == "__main__":
    main()
