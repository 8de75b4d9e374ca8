"""``Engine``: the small surface every transport is written against (not the concrete
``StreamEngine``), so a transport can be tested, or the engine replaced, on its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Protocol

from ..protocol import PullRequest, Request, StreamRequest
from .download import Download
from .outcomes import Accepted, Completion, Refused, Response, StreamStatus
from .window import PartCheck, RawWindow, ReadControl

__all__ = ["Engine"]


class Engine(Protocol):
    @property
    def shutting_down(self) -> bool:
        """True once the server stops granting windows (new requests get 503)."""
        ...

    def payload_limit(self) -> Callable[[Mapping[str, str]], int]:
        """The per-packet payload limit of each route, for the packet codec."""
        ...

    def largest_payload(self) -> int:
        """The largest payload any route takes in one packet."""
        ...

    async def handle_request(self, request: Request) -> Response: ...

    async def open_stream(
        self,
        request: StreamRequest,
        client: str,
        *,
        offset: int | None = None,
        at_most: int | None = None,
    ) -> Accepted | Refused: ...

    def receive(
        self,
        accepted: Accepted,
        reading: ReadControl,
        check: PartCheck | None = None,
        *,
        transport: str | None = None,
    ) -> RawWindow: ...

    async def create_stream(
        self,
        request: StreamRequest,
        client: str,
        *,
        length_deferred: bool = False,
        partial: bool = False,
    ) -> StreamStatus | Refused: ...

    async def concatenate(
        self, request: StreamRequest, client: str, parts: Sequence[str]
    ) -> tuple[StreamStatus, Completion | None] | Refused: ...

    async def set_length(
        self, key: str, total: int, authorization: str | None = None
    ) -> StreamStatus | Refused: ...

    async def status(
        self, key: str, authorization: str | None = None
    ) -> StreamStatus | Refused: ...

    async def terminate(self, key: str, authorization: str | None = None) -> Refused | None: ...

    def read(
        self, key: str, offset: int = 0, authorization: str | None = None
    ) -> AsyncIterator[bytes]: ...

    async def open_download(self, request: PullRequest, client: str) -> Download | Refused: ...

    async def open_content(
        self,
        key: str,
        offset: int = 0,
        *,
        live: bool = False,
        principal: str | None = None,
        readers: Collection[str] | None = None,
        buffer_size: int = ...,
        check_access: bool = True,
        route: str | None = None,
    ) -> Download | Refused: ...
