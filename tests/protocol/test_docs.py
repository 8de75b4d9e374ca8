"""The worked examples in docs/PROTOCOL.md are real packets of this codec."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xstream_server.protocol import encode_packet, parse_header_block

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
_EXAMPLE = re.compile(r"```\n(prefix .*?)```", re.DOTALL)
_PREFIX = re.compile(r"prefix\s+((?:[0-9a-f]{2} ){7}[0-9a-f]{2})\s+H = (\d+), P = (\d+)$")


def examples() -> list[str]:
    return _EXAMPLE.findall(DOC.read_text(encoding="utf-8"))


def test_the_document_has_examples() -> None:
    assert len(examples()) >= 9


@pytest.mark.parametrize("example", examples())
def test_example_is_what_the_codec_writes(example: str) -> None:
    first, *rest = example.rstrip("\n").split("\n")
    match = _PREFIX.fullmatch(first)
    assert match is not None, first
    lines, payload = [], b""
    for line in rest:
        if line.startswith("payload"):
            payload = line.removeprefix("payload").strip().encode()
        else:
            lines.append(line.removeprefix("headers").strip())
    block = "\n".join(lines).encode()
    prefix = bytes.fromhex(match.group(1))
    assert (len(block), len(payload)) == (int(match.group(2)), int(match.group(3)))
    headers = parse_header_block(block, 64)
    assert encode_packet(headers, payload) == prefix + block + payload
