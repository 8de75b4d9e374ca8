"""What a packet's headers mean (PROTOCOL §2, §3.1): requests, stream requests, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xstream_server.protocol import (
    DataFormat,
    InvalidRequest,
    Packet,
    PullRequest,
    Request,
    Status,
    StreamRequest,
    parse_request,
    parse_x_stream,
)

DIGEST = "0123456789abcdef" * 4


def parse(
    headers: dict[str, str], payload: bytes = b""
) -> Request | StreamRequest | PullRequest | InvalidRequest:
    return parse_request(Packet(headers, payload))


def invalid(headers: dict[str, str], payload: bytes = b"") -> InvalidRequest:
    event = parse(headers, payload)
    assert isinstance(event, InvalidRequest), event
    assert event.status == Status.BAD_REQUEST
    return event


# ---- x-stream values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1:1", (1, 1)),
        ("1048576:65536", (1048576, 65536)),
        ("007:08", (7, 8)),
        ("9999999999999999999:1", (9999999999999999999, 1)),
    ],
)
def test_x_stream_valid(value: str, expected: tuple[int, int]) -> None:
    assert parse_x_stream(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "0:1",
        "1:0",
        "0:0",
        "-1:4",
        "4:-1",
        "+1:4",
        "a:b",
        "5",
        "",
        ":",
        "5:",
        ":5",
        "1:2:3",
        "1 :2",
        "1: 2",
        "1.5:2",
        "0x10:2",
        "١:٢",  # Arabic-Indic digits are digits to int(), not to the protocol
        "10000000000000000000:1",  # 20 digits
        "-1",
    ],
)
def test_x_stream_invalid(value: str) -> None:
    assert parse_x_stream(value) is None


@settings(max_examples=100, deadline=None)
@given(total=st.integers(1, 10**18), buffer_size=st.integers(1, 10**18))
def test_x_stream_round_trip(total: int, buffer_size: int) -> None:
    assert parse_x_stream(f"{total}:{buffer_size}") == (total, buffer_size)


# ---- ordinary requests --------------------------------------------------------------------


def test_request_fields() -> None:
    event = parse(
        {
            "route": "/files/upload",
            "id": "req-1",
            "data-format": "json",
            "authorization": "Bearer t0k3n",
            "name": "report.pdf",
            "content-type": "application/pdf",
        },
        b'{"a": 1}',
    )
    assert event == Request(
        route="/files/upload",
        id="req-1",
        data_format=DataFormat.JSON,
        payload=b'{"a": 1}',
        metadata={"name": "report.pdf", "content-type": "application/pdf"},
        authorization="Bearer t0k3n",
    )


def test_request_defaults() -> None:
    event = parse({"route": "/echo"})
    assert event == Request("/echo", None, DataFormat.BYTES, b"")


@pytest.mark.parametrize("fmt", ["bytes", "json", "text"])
def test_data_formats(fmt: str) -> None:
    event = parse({"route": "/r", "data-format": fmt})
    assert isinstance(event, Request)
    assert event.data_format == DataFormat(fmt)


@pytest.mark.parametrize("fmt", ["", "JSON", "xml", "binary", "json "])
def test_bad_data_format(fmt: str) -> None:
    assert "data-format" in invalid({"route": "/r", "data-format": fmt, "id": "9"}).message


@pytest.mark.parametrize("headers", [{}, {"id": "1"}, {"route": ""}, {"route": "echo"}])
def test_missing_or_bad_route(headers: dict[str, str]) -> None:
    event = invalid(headers)
    assert "route" in event.message
    assert event.id == headers.get("id")
    assert not event.is_stream


def test_id_of_64_characters_is_echoed() -> None:
    event = parse({"route": "/r", "id": "i" * 64})
    assert isinstance(event, Request)
    assert event.id == "i" * 64


def test_id_longer_than_64_is_refused_and_not_echoed() -> None:
    event = invalid({"route": "/r", "id": "i" * 65})
    assert event.id is None
    assert "64" in event.message


@pytest.mark.parametrize("name", ["x-stream-key", "x-stream-checksum"])
def test_stream_headers_without_x_stream(name: str) -> None:
    event = invalid({"route": "/r", name: "whatever", "id": "a"})
    assert event.id == "a"
    assert not event.is_stream


# ---- stream requests ----------------------------------------------------------------------


def test_first_stream_request() -> None:
    event = parse(
        {
            "route": "/upload",
            "id": "s1",
            "x-stream": "1000:64",
            "x-stream-checksum": "sha256:" + DIGEST.upper(),
            "name": "a.bin",
        }
    )
    assert event == StreamRequest(
        route="/upload",
        id="s1",
        data_format=DataFormat.BYTES,
        total=1000,
        buffer_size=64,
        key=None,
        checksum=DIGEST,  # lower-cased
        metadata={"name": "a.bin"},
    )


def test_resume_request() -> None:
    key = "AbC-_09" * 4
    event = parse({"route": "/upload", "x-stream": "1000:64", "x-stream-key": key})
    assert isinstance(event, StreamRequest)
    assert (event.key, event.checksum, event.total) == (key, None, 1000)


@pytest.mark.parametrize("value", ["0:1", "1:0", "-1:4", "a:b", "5", ""])
def test_bad_x_stream_is_a_refused_stream(value: str) -> None:
    event = invalid({"route": "/upload", "id": "s", "x-stream": value})
    assert event.is_stream
    assert event.id == "s"
    assert "x-stream" in event.message


def test_stream_request_with_a_payload() -> None:
    event = invalid({"route": "/upload", "x-stream": "3:1"}, b"abc")
    assert event.is_stream
    assert "payload" in event.message


@pytest.mark.parametrize(
    "checksum",
    [
        DIGEST,  # no algorithm
        "sha256:" + DIGEST[:-1],
        "sha256:" + DIGEST + "0",
        "sha256:" + DIGEST[:-1] + "g",
        "sha256: " + DIGEST,
        "SHA256:" + DIGEST,
        "md5:" + DIGEST[:32],
        "sha256:",
    ],
)
def test_bad_checksum(checksum: str) -> None:
    event = invalid({"route": "/u", "x-stream": "1:1", "x-stream-checksum": checksum})
    assert event.is_stream
    assert "checksum" in event.message


@pytest.mark.parametrize("key", ["", "has space", "slash/y", "dot.s", "k" * 129, "ключ"])
def test_bad_key(key: str) -> None:
    event = invalid({"route": "/u", "x-stream": "1:1", "x-stream-key": key})
    assert event.is_stream


def test_route_is_checked_before_x_stream() -> None:
    event = invalid({"x-stream": "bad"})
    assert event.is_stream
    assert "route" in event.message


def test_stream_request_with_a_long_id() -> None:
    event = invalid({"route": "/u", "x-stream": "1:1", "id": "x" * 65})
    assert event.is_stream
    assert event.id is None
