"""Downloads over uTP: the same driver serves pulls on every byte-stream transport."""

from __future__ import annotations

from pathlib import Path

from tests.utp.conftest import random_file, utp_address
from xstream_server.client import download, partial_path, upload
from xstream_server.server import Server


async def test_download_over_utp_resumes_a_partial_file(utp_server: Server, tmp_path: Path) -> None:
    source, digest = random_file(tmp_path, 600_000)
    uploaded = await upload(source, server=f"127.0.0.1:{utp_server.port}")
    target = tmp_path / "copy.bin"
    partial_path(target).write_bytes(source.read_bytes()[:70_000])
    result = await download(uploaded.key, target, server=utp_address(utp_server), transport="utp")
    assert (result.sha256, result.verified, result.resumed_from) == (digest, True, 70_000)
    assert target.read_bytes() == source.read_bytes()
