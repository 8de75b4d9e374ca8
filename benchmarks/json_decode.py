"""How long a 16 MiB JSON document takes to decode, and the longest the event loop waits
meanwhile (a 1 ms asyncio ticker), with json.loads and with loads_in_pieces, each in a
thread of its own as the server does it (issue 14).

    python -m benchmarks.json_decode
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from xstream_server.engine.json_pieces import loads_in_pieces

ITEM = b'{"id":123456,"name":"abcdefgh"}'
COUNT = (16 * 1024 * 1024 - 2) // (len(ITEM) + 1)
DOCUMENT = b"[" + b",".join([ITEM] * COUNT) + b"]"


async def measure(decode: Callable[[bytes], Any], pool: ThreadPoolExecutor) -> tuple[float, float]:
    """(decode seconds in its thread, longest gap between two 1 ms ticks)."""
    done = False
    gap = 0.0

    async def tick() -> None:
        nonlocal gap
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gap, last = max(gap, now - last), now

    def timed() -> tuple[float, Any]:
        nonlocal done
        start = time.perf_counter()
        value = decode(DOCUMENT)
        seconds = time.perf_counter() - start
        done = True  # its deallocation later is not the decoding's
        return seconds, value

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    seconds, value = await asyncio.get_running_loop().run_in_executor(pool, timed)
    await ticker
    del value
    return seconds, gap


async def main() -> None:
    with ThreadPoolExecutor(1) as pool:
        for collector in ("on", "off"):
            (gc.enable if collector == "on" else gc.disable)()
            print(f"cyclic garbage collector {collector}:")
            for _ in range(2):
                for decode in (json.loads, loads_in_pieces):
                    seconds, gap = await measure(decode, pool)
                    print(
                        f"{decode.__name__:16} decode {seconds:.3f} s,"
                        f" max loop gap {gap * 1000:.1f} ms"
                    )


if __name__ == "__main__":
    asyncio.run(main())
