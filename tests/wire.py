"""A deliberately small wire-level client for end-to-end tests: it sends exactly the packets
and raw bytes a test asks for, so that every malformed case can be provoked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from types import TracebackType

from xstream_server.protocol import Packet, PacketDecoder, encode_packet
from xstream_server.protocol.codec import PREFIX


class Wire:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        # Responses may be larger than any request limit; the test decides what it reads.
        self.decoder = PacketDecoder(payload_limit=lambda _: 1 << 31)

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> Wire:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        return cls(reader, writer)

    async def send(self, headers: Mapping[str, str | int], payload: bytes = b"") -> None:
        self.writer.write(encode_packet(headers, payload))
        await self.writer.drain()

    async def send_raw(self, data: bytes | memoryview) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_frame(
        self, header_block: bytes, payload: bytes = b"", *, declared: int | None = None
    ) -> None:
        """A packet built by hand (possibly malformed); ``declared`` overrides payload_len."""
        size = len(payload) if declared is None else declared
        self.writer.write(PREFIX.pack(len(header_block), size) + header_block + payload)
        await self.writer.drain()

    async def receive(self, timeout: float = 30.0) -> Packet:
        async with asyncio.timeout(timeout):
            while True:
                packet = self.decoder.next_packet()
                if packet is not None:
                    return packet
                data = await self.reader.read(1 << 20)
                if not data:
                    raise EOFError("server closed the connection")
                self.decoder.receive_data(data)

    async def receive_raw(self, size: int, timeout: float = 30.0) -> bytes:
        """Exactly ``size`` raw bytes (a download's content), then packets again."""
        data = bytearray(self.decoder.take_buffered())
        async with asyncio.timeout(timeout):
            while len(data) < size:
                more = await self.reader.read(min(1 << 20, size - len(data)))
                if not more:
                    raise EOFError(f"server closed after {len(data)} of {size} raw bytes")
                data += more
        self.decoder.receive_data(bytes(data[size:]))
        return bytes(data[:size])

    async def request(self, headers: Mapping[str, str | int], payload: bytes = b"") -> Packet:
        await self.send(headers, payload)
        return await self.receive()

    async def closed_by_server(self, timeout: float = 30.0) -> bool:
        """True once the server has closed its side (after any packets it still sent)."""
        async with asyncio.timeout(timeout):
            while await self.reader.read(1 << 16):
                pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    async def __aenter__(self) -> Wire:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def status(packet: Packet) -> int:
    return int(packet.headers["status"])
