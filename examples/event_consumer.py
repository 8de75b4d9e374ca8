"""Read xstream's lifecycle events with a Redis consumer group (docs/EVENTS.md).

    python examples/event_consumer.py redis://127.0.0.1:6379/0 [group] [consumer]

Run as many consumers of one group as you like, on any machines: each event goes to one of
them, and stays pending until it is acknowledged, so a consumer that dies mid-event leaves
it for another (XAUTOCLAIM) rather than losing it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

STREAM = "xs:events"


async def handle(event: dict[str, str]) -> None:
    """Your code: here, print what finished."""
    if event["kind"] == "completed":
        result = json.loads(event["result"]) if event.get("result_format") == "json" else None
        print(f"{event['key']} on {event['route']}: {event['total']} bytes, {result}")
    elif event["kind"] in ("failed", "expired", "terminated"):
        print(f"{event['key']}: {event['kind']} ({event.get('status', '-')})")


async def consume(url: str, group: str, consumer: str) -> None:
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        # "$": only events from now on; "0" would start with everything the stream keeps.
        await redis.xgroup_create(STREAM, group, id="$", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):  # the group exists: join it
            raise
    while True:
        # First what this consumer left unacknowledged (after a crash), then new events.
        for start in ("0", ">"):
            answer = cast(
                Any,
                await redis.xreadgroup(
                    group,
                    consumer,
                    {STREAM: start},
                    count=100,
                    block=5000 if start == ">" else None,
                ),
            )
            for _stream, entries in answer or []:
                for entry_id, event in entries:
                    await handle(event)
                    await redis.xack(STREAM, group, entry_id)


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"
    group = sys.argv[2] if len(sys.argv) > 2 else "backend"
    consumer = sys.argv[3] if len(sys.argv) > 3 else "consumer-1"
    asyncio.run(consume(url, group, consumer))
