"""Completing a stream: every byte is durable; verify the announced sha256, finalize the
part into the finished object, run the route's completion handler, record the result.

The handler runs after the file is in place and before the result is recorded: if the
server dies in between, it runs again on the next resume (at least once, never zero times).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from ..app import CompletedUpload, RouteError, encode_reply
from ..protocol import DataFormat, Status
from ..state import StateStore, StoredResult
from ..storage import Storage
from .outcomes import Completion, completion_of
from .session import StreamSession

__all__ = ["Completer", "decode_payload"]

log = logging.getLogger("xstream.engine")


def decode_payload(fmt: DataFormat, payload: bytes) -> Any:
    """A json/text payload as the handler sees it; raises ValueError or RecursionError."""
    if fmt is DataFormat.JSON:
        return json.loads(payload)
    if fmt is DataFormat.TEXT:
        return payload.decode("utf-8")
    return payload


class Completer:
    def __init__(self, store: StateStore, storage: Storage) -> None:
        self.store = store
        self.storage = storage

    async def complete(self, session: StreamSession) -> Completion:
        """All bytes are durable: verify, finalize, run the route's handler, record the result."""
        record, route = session.record, session.route
        hasher = session.hasher
        sha256 = (
            hasher.hexdigest() if hasher else await self.storage.hash_part(record.key, record.total)
        )
        if record.checksum is not None and record.checksum != sha256:
            await self.storage.discard(record.key)
            await self.store.delete(record.key)
            log.warning("stream %s: checksum mismatch, discarded", record.key)
            return Completion(
                record.key,
                record.total,
                Status.CHECKSUM_MISMATCH,
                f"sha256 of the stored bytes is {sha256}, not the announced one",
            )
        path = await self.storage.finalize(record.key)
        fmt = DataFormat(record.data_format)
        status, message = Status.OK, None
        payload: bytes = b""
        reply_format: DataFormat | None = None
        extra: Mapping[str, str | int] = {}
        try:
            content = None
            if fmt is not DataFormat.BYTES:
                raw = await asyncio.to_thread(path.read_bytes)
                try:
                    content = decode_payload(fmt, raw)
                except (ValueError, RecursionError) as exc:
                    raise RouteError(
                        Status.BAD_REQUEST, f"stream is not valid {fmt}: {exc}"
                    ) from exc
            upload = CompletedUpload(
                record.key,
                record.route,
                record.total,
                path,
                record.metadata,
                sha256,
                fmt,
                record.principal,
                content,
            )
            # A part of a tus concatenation is not an upload of its own: no handler.
            reply = None if record.partial else await route.on_complete(upload)
            payload, reply_format, extra = encode_reply(reply)
        except RouteError as exc:
            status, message = exc.status, exc.message
        except Exception:
            log.exception("completion handler of %s failed for %s", route.path, record.key)
            status, message = Status.SERVER_ERROR, "completion handler error"
        headers: dict[str, str | int] = dict(extra)
        if fmt is DataFormat.BYTES:
            headers["x-stream-checksum"] = f"sha256:{sha256}"
        if message is not None:
            headers["message"] = message
        result = StoredResult(
            int(status), headers, payload, (reply_format or DataFormat.BYTES).value
        )
        await self.store.complete(record.key, session.owner, result)
        log.info("stream %s complete: %d bytes, status %d", record.key, record.total, int(status))
        return completion_of(record.key, result)
