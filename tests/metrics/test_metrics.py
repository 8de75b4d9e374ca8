"""``/metrics``: a crafted run of uploads against real server processes and a real Redis,
then one scrape over HTTP, parsed with Prometheus's own parser, must count exactly what
happened; with ``--workers 2`` one scrape counts the uploads of both workers, and a worker
killed with SIGKILL leaves its counts and loses its gauges. Nothing secret is in it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from typing import Final

import httpx
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess, SpawnServer
from tests.durability.support import Link, grant, sha256, status, until
from tests.fleet.support import finish, holder, start, workers
from tests.metrics.app import MAX_SIZE, PRINCIPAL, TOKEN

APP: Final = ("--app", "tests.metrics.app:app")
SECRET: Final = "metrics-test-auth-secret-0123456789abcdef"
_HTTP_PORT: Final = re.compile(r"http://127\.0\.0\.1:(\d+)")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def http_port(server: ServerProcess) -> int:
    for line in server.log:
        match = _HTTP_PORT.search(line)
        if match:
            return int(match.group(1))
    raise AssertionError("no HTTP port in the server's log")


async def scrape_text(server: ServerProcess) -> str:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{http_port(server)}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return answer.text


async def scrape(server: ServerProcess) -> Samples:
    """Every sample of one scrape, by name and labels."""
    samples: Samples = {}
    for family in text_string_to_metric_families(await scrape_text(server)):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def durable(redis_url: str, key: str, offset: int) -> bool:
    """True once the stream's recorded durable offset has reached ``offset``."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        recorded = await client.hget(f"xs:{{{key}}}:stream", "offset")
        return int(recorded or 0) >= offset
    finally:
        await client.aclose()


async def lease_free(redis_url: str, key: str) -> bool:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return not await client.exists(f"xs:{{{key}}}:lease")
    finally:
        await client.aclose()


async def refused_by_handler(port: int, data: bytes) -> int:
    """Upload ``data`` on the route whose handler refuses it; the completion's status."""
    async with await Link.connect(port) as link:
        headers: dict[str, str | int] = {"route": "/refuse", "x-stream": f"{len(data)}:65536"}
        reply = await link.request(headers)
        assert status(reply) == 0, reply.headers
        await link.send_raw(data)
        return status(await link.receive())


async def tus_upload(port: int, data: bytes) -> None:
    """One upload over HTTP: a tus creation, then one PATCH with every byte."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        created = await http.post(
            "/upload-file",
            headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(len(data))},
        )
        assert created.status_code == 201, created.text
        patched = await http.patch(
            created.headers["location"],
            content=data,
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert patched.status_code == 204, patched.text


async def test_a_run_of_uploads_is_counted_exactly(
    spawn_server: SpawnServer, redis_url: str
) -> None:
    server = spawn_server(*APP)
    port = server.port
    async with asyncio.timeout(60):
        before = await scrape(server)
        assert value(before, "xstream_uploads_completed_total") == 0
        assert value(before, "xstream_received_bytes_total", transport="tcp") == 0
        assert value(before, "xstream_data_dir_free_bytes") > 0

        plain = [os.urandom(50_000 + n) for n in range(3)]
        for body in plain:
            await finish(port, body)

        # Refused before any byte: larger than the route takes (413).
        async with await Link.connect(port) as link:
            too_big: dict[str, str | int] = {
                "route": "/upload-file",
                "x-stream": f"{MAX_SIZE + 1}:65536",
            }
            assert status(await link.request(too_big)) == 413

        # Every byte stored, then refused by the completion handler (400).
        refused_body = os.urandom(30_000)
        assert await refused_by_handler(port, refused_body) == 400

        # Resumed: half sent and made durable, the connection dropped and let go, the rest
        # sent on a new connection.
        resumed = os.urandom(200_000)
        link, key = await start(port, resumed, 100_000)
        await until(lambda: durable(redis_url, key, 100_000))
        link.abort()
        await until(lambda: lease_free(redis_url, key))
        await finish(port, resumed, key)

        # Taken over: half sent and durable, the connection left open; a new connection
        # resumes the stream and the server stops the old window for it.
        taken = os.urandom(200_000)
        old, taken_key = await start(port, taken, 100_000)
        await until(lambda: durable(redis_url, taken_key, 100_000))
        await finish(port, taken, taken_key)
        superseded = await old.receive()
        assert status(superseded) == 409
        old.abort()

        # One over HTTP (tus).
        over_http = os.urandom(40_000)
        await tus_upload(http_port(server), over_http)

        # The gauges fall back once the server has seen every connection close.
        async def settled() -> bool:
            now = await scrape(server)
            return value(now, "xstream_active_connections", transport="tcp") == 0

        await until(settled, step=0.05)
        after = await scrape(server)

    tcp_bytes = sum(map(len, plain)) + len(refused_body) + len(resumed) + len(taken)
    assert value(after, "xstream_received_bytes_total", transport="tcp") == tcp_bytes
    assert value(after, "xstream_received_bytes_total", transport="http") == len(over_http)
    assert value(after, "xstream_uploads_created_total") == 3 + 1 + 1 + 1 + 1
    assert value(after, "xstream_uploads_completed_total") == 3 + 1 + 1 + 1
    assert value(after, "xstream_uploads_failed_total", status="400") == 1
    assert value(after, "xstream_stream_requests_refused_total", status="413") == 1
    assert value(after, "xstream_resumes_total") == 2
    assert value(after, "xstream_takeovers_total") == 1
    assert value(after, "xstream_completion_retries_total") == 0
    for transport in ("tcp", "websocket", "utp", "http"):
        assert value(after, "xstream_active_streams", transport=transport) == 0
    assert value(after, "xstream_active_connections", transport="http") >= 1  # this scrape
    checkpoints = value(after, "xstream_checkpoint_duration_seconds_count")
    assert checkpoints >= 2  # at least the resumed and the taken-over streams' halves
    assert value(after, "xstream_checkpoint_duration_seconds_bucket", le="+Inf") == checkpoints
    assert value(after, "xstream_fsync_duration_seconds_count") >= checkpoints
    assert value(after, "xstream_redis_duration_seconds_count", operation="checkpoint") >= 2
    assert value(after, "xstream_redis_duration_seconds_count", operation="complete") == 7
    assert value(after, "xstream_sweeper_removals_total", kind="expired") == 0
    free = value(after, "xstream_data_dir_free_bytes")
    assert 0 < free <= shutil.disk_usage(data_dir(server)).total
    assert server.terminate() == 0


async def test_uploads_on_both_workers_are_counted_in_one_scrape(
    spawn_server: SpawnServer,
) -> None:
    server = spawn_server("--workers", "2", *APP)
    async with asyncio.timeout(60):
        bodies = [os.urandom(20_000 + n) for n in range(16)]
        results = await asyncio.gather(*(finish(server.port, body) for body in bodies))
        # 16 connections on one of two workers would be a 1-in-32768 chance.
        assert len({result["pid"] for result in results}) == 2
        for _ in range(4):  # each scrape lands on either worker; every one sees it all
            samples = await scrape(server)
            assert value(samples, "xstream_uploads_completed_total") == 16
            assert value(samples, "xstream_uploads_created_total") == 16
            assert value(samples, "xstream_received_bytes_total", transport="tcp") == sum(
                map(len, bodies)
            )

        # A worker killed with a connection open: its counts stay, its gauges go.
        link = await Link.connect(server.port)
        victim = holder(server, link)
        await until(lambda: _gauge_at(server, "xstream_active_connections", 1))
        victim.send_signal(signal.SIGKILL)
        await link.wait_closed(10)
        await until(lambda: len(workers(server)) == 2 and victim.pid not in _pids(server))
        samples = await scrape(server)
        assert value(samples, "xstream_active_connections", transport="tcp") == 0
        assert value(samples, "xstream_uploads_completed_total") == 16
        # Counting goes on in the new worker.
        await finish(server.port, bodies[0])
        await until(lambda: _counter_at(server, "xstream_uploads_completed_total", 17))
    assert server.terminate() == 0


async def test_metrics_carry_no_keys_tokens_or_secrets(spawn_server: SpawnServer) -> None:
    server = spawn_server(*APP, env={"XSTREAM_AUTH_SECRET": SECRET})
    keys = []
    async with asyncio.timeout(30):
        for n in range(3):
            body = os.urandom(10_000 + n)
            async with await Link.connect(server.port) as link:
                headers: dict[str, str | int] = {
                    "route": "/upload-file",
                    "x-stream": f"{len(body)}:65536",
                    "authorization": f"Bearer {TOKEN}",
                }
                reply = await link.request(headers)
                assert status(reply) == 0, reply.headers
                keys.append(reply.headers["x-stream-key"])
                offset, _ = grant(reply, len(body))
                await link.send_raw(body[offset:])
                done = await link.receive()
                assert status(done) == 0
                assert done.headers["x-stream-checksum"] == sha256(body)
        # A wrong token is refused (401) and not kept either.
        async with await Link.connect(server.port) as link:
            wrong: dict[str, str | int] = {
                "route": "/upload-file",
                "x-stream": "10:65536",
                "authorization": "Bearer wrong-token-9d8c7b",
            }
            assert status(await link.request(wrong)) == 401
        text = await scrape_text(server)
    assert "xstream_uploads_completed_total 3.0" in text
    for secret in [*keys, TOKEN, "wrong-token-9d8c7b", PRINCIPAL, SECRET, "127.0.0.1"]:
        assert secret not in text
    assert server.terminate() == 0


async def _gauge_at(server: ServerProcess, name: str, wanted: float) -> bool:
    return value(await scrape(server), name, transport="tcp") == wanted


async def _counter_at(server: ServerProcess, name: str, wanted: float) -> bool:
    return value(await scrape(server), name) == wanted


def _pids(server: ServerProcess) -> set[int]:
    return {worker.pid for worker in workers(server)}


def data_dir(server: ServerProcess) -> str:
    return server.args[server.args.index("--data-dir") + 1]
