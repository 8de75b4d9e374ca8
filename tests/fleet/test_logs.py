"""``--log-format json``: one JSON object per line, with the stream's key, route, client
and status where they apply, and neither payload bytes nor credentials."""

from __future__ import annotations

import asyncio
import json

from tests.conftest import SpawnServer
from tests.durability.support import Link, status
from xstream_server.identity import issue_token
from xstream_server.logs import scrub

MARK = b"PAYLOAD-MARK-" * 100


async def test_json_lines_carry_the_stream_and_no_payload_or_secret(
    spawn_server: SpawnServer,
) -> None:
    # The embedded Redis: its URL holds a password, which must not show.
    # The default app checks bearer tokens: a real one, which must not show either.
    secret = "log-test-secret-" * 3
    token = issue_token(secret, "@logger")
    server = spawn_server(
        "--log-format",
        "json",
        "--log-level",
        "DEBUG",
        redis=None,
        env={"XSTREAM_AUTH_SECRET": secret},
    )
    async with asyncio.timeout(30), await Link.connect(server.port) as link:
        accept = await link.request(
            {
                "route": "/upload-file",
                "x-stream": f"{len(MARK)}:65536",
                "authorization": f"Bearer {token}",
            }
        )
        key = accept.headers["x-stream-key"]
        await link.send_raw(MARK)
        assert status(await link.receive()) == 0
    assert server.terminate() == 0
    lines = [json.loads(line) for line in server.log]  # every line is one JSON object
    assert all({"time", "level", "logger", "message", "pid"} <= set(line) for line in lines)
    done = [line for line in lines if line.get("key") == key and "complete" in line["message"]]
    assert done and done[0]["route"] == "/upload-file" and done[0]["status"] == 0
    assert done[0]["client"] == "principal @logger"  # a stream with a principal counts by it
    text = "\n".join(server.log)
    assert "PAYLOAD-MARK" not in text and token not in text and secret not in text
    assert any("unix://:***@" in line["message"] for line in lines)


def test_scrub_masks_url_passwords_and_tokens() -> None:
    assert scrub("redis://:hunter2@host:6379/0") == "redis://:***@host:6379/0"
    assert scrub("rediss://user:pw@h") == "rediss://user:***@h"
    assert scrub("authorization: Bearer abc.def") == "authorization: Bearer ***"
