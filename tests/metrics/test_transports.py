"""Each transport's connections, streams and bytes are counted under its own label (a server
in this process, so the figures are read as differences: earlier tests counted too), and
``--no-metrics`` removes the route."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerFactory
from tests.durability.support import status
from tests.server.test_websocket import ws_wire
from xstream_server.client import upload
from xstream_server.server import Server

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(server: Server) -> Samples:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{server.http_port}/metrics")
    assert answer.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def by_transport(samples: Samples, name: str, transport: str) -> float:
    return samples.get((name, (("transport", transport),)), 0.0)


async def test_websocket_and_utp_are_counted_apart(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    over_websocket = os.urandom(300_000)
    over_utp = tmp_path / "utp.bin"
    over_utp.write_bytes(os.urandom(200_000))
    async with make_server(utp_port=0) as server, asyncio.timeout(30):
        before = await scrape(server)
        async with ws_wire(server) as wire:
            accept = await wire.request(
                {"route": "/upload-file", "x-stream": f"{len(over_websocket)}:65536"}
            )
            assert status(accept) == 0
            await wire.send_raw(over_websocket)
            assert status(await wire.receive()) == 0
            during = await scrape(server)
        await upload(over_utp, server=f"127.0.0.1:{server.utp_port}", transport="utp")
        after = await scrape(server)

    def grew(samples: Samples, name: str, transport: str) -> float:
        return by_transport(samples, name, transport) - by_transport(before, name, transport)

    assert grew(during, "xstream_active_connections", "websocket") == 1
    assert grew(after, "xstream_received_bytes_total", "websocket") == len(over_websocket)
    assert grew(after, "xstream_received_bytes_total", "utp") == 200_000
    assert grew(after, "xstream_received_bytes_total", "tcp") == 0
    assert grew(after, "xstream_received_bytes_total", "http") == 0
    for transport in ("websocket", "utp"):
        assert grew(after, "xstream_active_streams", transport) == 0
    assert grew(after, "xstream_active_connections", "websocket") == 0


async def test_no_metrics_route_when_turned_off(make_server: ServerFactory) -> None:
    async with make_server(metrics=False) as server, httpx.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{server.http_port}/metrics")
    assert answer.status_code == 404
