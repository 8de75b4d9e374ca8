"""Completing a stream: every byte is durable; verify the announced sha256, finalize the
part into the finished object, run the route's completion handler, record the result.

The stream is recorded as finalized (offset = total, with its sha256) before the handler
runs, and its result after: if the handler fails, or the server dies in between, the next
resume runs it again (at least once, never zero times, up to the route's
``completion_attempts``), without needing the file the handler may have moved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..app import CompletedUpload, RouteError, encode_reply
from ..events import EventKind, StreamEvent, StreamEvents
from ..protocol import DataFormat, Status
from ..state import StateStore, StoredResult, StreamRecord, StreamState
from ..storage import Storage
from .json_pieces import loads_in_pieces
from .outcomes import Completion, completion_of
from .session import StreamSession

__all__ = ["Completer", "decode_payload"]

log = logging.getLogger("xstream.engine")


def decode_payload(fmt: DataFormat, payload: bytes) -> Any:
    """A json/text payload as the handler sees it; raises ValueError or RecursionError."""
    if fmt is DataFormat.JSON:
        return loads_in_pieces(payload)
    if fmt is DataFormat.TEXT:
        return payload.decode("utf-8")
    return payload


_decoding: ThreadPoolExecutor | None = None


def _decoder() -> ThreadPoolExecutor:
    """One thread of its own decodes finished json/text streams, one at a time: decoding
    needs the GIL (json in pieces of ~1 ms, so the event loop gets it in between), so more
    threads would not decode faster, only take more turns from the event loop; and the
    default pool stays free for storage I/O (fsync, rename, hashing). Waiting streams hold
    no memory: each reads its file when its turn comes."""
    global _decoding
    if _decoding is None:
        _decoding = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xstream-decode")
    return _decoding


def _load(key: str, path: Path, fmt: DataFormat) -> Any:
    """Read and decode a finished json/text stream (in a worker thread)."""
    raw = path.read_bytes()
    log.debug("stream %s: decoding %d bytes of %s", key, len(raw), fmt)
    content = decode_payload(fmt, raw)
    log.debug("stream %s: decoded", key)
    return content


class Completer:
    def __init__(
        self, store: StateStore, storage: Storage, events: StreamEvents | None = None
    ) -> None:
        self.store = store
        self.storage = storage
        self.events = events

    def _emit(self, record: StreamRecord, kind: EventKind, **details: Any) -> None:
        if self.events is not None:
            self.events.emit(
                StreamEvent(
                    kind,
                    record.key,
                    route=record.route,
                    total=record.total,
                    principal=record.principal,
                    metadata=record.metadata,
                    **details,
                )
            )

    async def complete(self, session: StreamSession) -> Completion:
        """All bytes are durable: verify, finalize, run the route's handler, record the result."""
        record, route = session.record, session.route
        if record.state is StreamState.FINALIZED and record.sha256 is not None:
            # Finalized before: the handler failed, or the server died while it ran. The
            # file may be gone (the handler may have moved it): the record is what counts.
            sha256 = record.sha256
            path = self.storage.finished_path(record.key)
            attempt = await self.store.begin_attempt(record.key, session.owner)
        else:
            hasher = await session.settled_hasher()
            sha256 = (
                hasher.hexdigest()
                if hasher
                else await self.storage.hash_part(record.key, record.total)
            )
            if record.checksum is not None and record.checksum != sha256:
                await self.storage.discard(record.key)
                await self.store.delete(record.key)
                log.warning(
                    "stream %s: checksum mismatch, discarded",
                    record.key,
                    extra={**session.log_fields, "status": int(Status.CHECKSUM_MISMATCH)},
                )
                self._emit(
                    record,
                    EventKind.FAILED,
                    status=int(Status.CHECKSUM_MISMATCH),
                    message="checksum mismatch",
                    sha256=sha256,
                )
                return Completion(
                    record.key,
                    record.total,
                    Status.CHECKSUM_MISMATCH,
                    f"sha256 of the stored bytes is {sha256}, not the announced one",
                )
            path = await self.storage.finalize(record.key)
            # Recorded before the handler runs: whatever it does with the file, a resume
            # reports every byte as stored and runs the handler again if need be. The same
            # trip counts the handler's first run.
            attempt = await self.store.finalize(record.key, session.owner, sha256)
        fmt = DataFormat(record.data_format)
        status, message = Status.OK, None
        payload: bytes = b""
        reply_format: DataFormat | None = None
        extra: Mapping[str, str | int] = {}
        failed = False
        if attempt > route.completion_attempts:
            # The earlier runs all ended with the server (a crash inside the handler).
            log.error(
                "stream %s: completion handler of %s did not finish in %d runs",
                record.key,
                route.path,
                route.completion_attempts,
            )
            status, message, failed = Status.SERVER_ERROR, "completion handler error", True
        else:
            try:
                content = None
                if fmt is not DataFormat.BYTES:
                    # Up to max_decoded_size (16 MiB: ~0.3 s of CPU for JSON): in a thread,
                    # and in pieces (json_pieces), or every other connection would stall.
                    try:
                        content = await asyncio.get_running_loop().run_in_executor(
                            _decoder(), _load, record.key, path, fmt
                        )
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
                    attempt,
                )
                # A part of a tus concatenation is not an upload of its own: no handler.
                reply = None if record.partial else await route.on_complete(upload)
                payload, reply_format, extra = encode_reply(reply)
            except RouteError as exc:
                status, message = exc.status, exc.message
            except Exception:
                log.exception(
                    "completion handler of %s failed for %s (run %d of %d)",
                    route.path,
                    record.key,
                    attempt,
                    route.completion_attempts,
                )
                status, message, failed = Status.SERVER_ERROR, "completion handler error", True
        headers: dict[str, str | int] = dict(extra)
        if fmt is DataFormat.BYTES:
            headers["x-stream-checksum"] = f"sha256:{sha256}"
        if failed and attempt < route.completion_attempts:
            # Not final: the stream stays finalized and the next resume runs the handler
            # again. 503 is transient: a client retries it by itself.
            self._emit(
                record,
                EventKind.FAILED,
                status=int(Status.SERVER_ERROR),
                final=False,
                message=f"completion handler error (run {attempt})",
                sha256=sha256,
                offset=record.total,
            )
            return Completion(
                record.key,
                0,
                Status.UNAVAILABLE,
                f"completion handler error (run {attempt} of {route.completion_attempts}); "
                "resume the stream to run it again",
                headers=headers,
            )
        if message is not None:
            headers["message"] = message
        result = StoredResult(
            int(status), headers, payload, (reply_format or DataFormat.BYTES).value
        )
        await self.store.complete(record.key, session.owner, result, succeeded=status is Status.OK)
        session.lease_released()  # the completion record let go of it
        log.info(
            "stream %s complete: %d bytes, status %d",
            record.key,
            record.total,
            int(status),
            extra={**session.log_fields, "status": int(status)},
        )
        self._emit(
            record,
            EventKind.COMPLETED if status is Status.OK else EventKind.FAILED,
            status=int(status),
            message=message,
            result=payload if status is Status.OK else None,
            result_format=result.data_format if status is Status.OK else None,
            sha256=sha256,
            offset=record.total,
        )
        return completion_of(record.key, result)
