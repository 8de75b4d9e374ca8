"""Send-to-user (PROTOCOL §8): ``/send`` (a stream route), ``/send/accept``,
``/send/deny``, ``/send/get`` (a pull route), ``/send/done`` and ``/send/refuse``.

The upload is an ordinary stream of the ``/send`` route: it resumes and is durable as any
other, whether or not the addressee is online. The addressee gets ``stream-offer`` as soon
as the first window is granted; accepting, denying and receiving everything notify the
sender. A denied stream is discarded (a window still open on it ends with 403 naming the
denial; a resume gets 410); a delivered one is deleted ``send_keep`` seconds later."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, Final

from ..app import (
    App,
    AuthPolicy,
    CompletedUpload,
    PullContext,
    RequestContext,
    RouteError,
    StreamContent,
    StreamOffer,
)
from ..protocol import Status
from ..state import StreamState
from ..state.social import SendRecord, SendState
from .service import PRINCIPAL, PeopleService, json_object, principal_of, unavailable_as_503

__all__ = ["SEND_ROUTE", "add_send_routes"]

SEND_ROUTE: Final = "/send"
_MAX_REASON: Final = 500
# Headers of a send that are not the file's own metadata.
_SEND_HEADERS: Final = frozenset({"to", "name"})
SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")


def _key_of(body: Mapping[str, Any]) -> str:
    key = body.get("key")
    if not isinstance(key, str) or not 0 < len(key) <= 128:
        raise RouteError(Status.BAD_REQUEST, 'payload must be JSON {"key": "<key>", ...}')
    return key


def add_send_routes(app: App, people: PeopleService, auth: AuthPolicy, **stream: Any) -> None:
    async def addressed(request: RequestContext) -> tuple[SendRecord, dict[str, Any]]:
        """The send named by the request, which must be addressed to its principal."""
        body = json_object(request)
        key = _key_of(body)
        record = await people.store.get_send(key)
        if record is None:
            raise RouteError(Status.GONE, "no such send (unknown, discarded or expired)")
        if record.to != principal_of(request):
            raise RouteError(Status.FORBIDDEN, "this send is addressed to someone else")
        return record, body

    @unavailable_as_503
    async def offer(offer: StreamOffer) -> int | None:
        if offer.resume:
            return None
        sender = offer.principal or ""
        to = offer.metadata.get("to", "")
        if not PRINCIPAL.fullmatch(to):
            raise RouteError(Status.BAD_REQUEST, "a send needs 'to: @name'")
        if not await people.store.known(to):
            raise RouteError(Status.NOT_FOUND, f"{to} is unknown here")
        if await people.store.refuses(to, sender):
            raise RouteError(Status.FORBIDDEN, f"{to} does not take files from {sender}")
        metadata = {k: v for k, v in offer.metadata.items() if k not in _SEND_HEADERS}
        name = offer.metadata.get("name", offer.key)
        settings = people.settings
        record = SendRecord(
            offer.key, sender, to, name, offer.total, SendState.OFFERED, metadata=metadata
        )
        keep = 2 * settings.stream_expiry + settings.send_keep
        await people.store.create_send(record, keep)
        payload = {
            "key": offer.key,
            "from": sender,
            "name": name,
            "size": offer.total,
            "metadata": metadata,
        }
        await people.notify(to, "stream-offer", sender, payload)
        return None

    @app.stream(SEND_ROUTE, accept=offer, auth=auth, **stream)
    async def sent(upload: CompletedUpload) -> dict[str, Any]:
        # The finished file stays where it is: the addressee pulls it from the stream.
        return {
            "key": upload.key,
            "size": upload.size,
            "sha256": upload.sha256,
            "to": upload.metadata.get("to"),
            "name": upload.metadata.get("name"),
        }

    async def status_fields(key: str) -> dict[str, Any]:
        record = await people.store.get_send(key)
        if record is None:
            return {}
        return {"to": record.to, "delivered": record.delivered, "send-state": record.state.value}

    app.add_status_fields(SEND_ROUTE, unavailable_as_503(status_fields))

    @app.request("/send/accept", auth=auth)
    @unavailable_as_503
    async def accept(request: RequestContext) -> dict[str, Any]:
        record, _ = await addressed(request)
        before = await people.store.set_send_state(
            record.key, SendState.ACCEPTED, [SendState.OFFERED]
        )
        if before is None or before is SendState.DENIED:
            raise RouteError(Status.GONE, "this send was denied and discarded")
        if before is SendState.OFFERED:
            await people.notify(
                record.sender, "stream-accepted", record.to, {"key": record.key, "to": record.to}
            )
        state = SendState.ACCEPTED if before is SendState.OFFERED else before
        return {"key": record.key, "state": state.value, "size": record.size}

    @app.request("/send/deny", auth=auth)
    @unavailable_as_503
    async def deny(request: RequestContext) -> dict[str, Any]:
        record, body = await addressed(request)
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > _MAX_REASON):
            raise RouteError(Status.BAD_REQUEST, f"reason must be text of at most {_MAX_REASON}")
        before = await people.store.set_send_state(
            record.key, SendState.DENIED, [SendState.OFFERED, SendState.ACCEPTED], reason
        )
        if before is SendState.DELIVERED:
            raise RouteError(Status.CONFLICT, "this send was delivered already")
        if before is SendState.DENIED:
            return {"key": record.key, "state": "denied"}
        message = f"denied by {record.to}" + (f": {reason}" if reason else "")
        await people.services.engine.discard(record.key, Status.FORBIDDEN, message)
        await people.notify(
            record.sender,
            "stream-denied",
            record.to,
            {"key": record.key, "to": record.to, "reason": reason},
        )
        return {"key": record.key, "state": "denied"}

    @app.pull("/send/get", auth=auth)
    @unavailable_as_503
    async def get(pull: PullContext) -> StreamContent:
        """The addressee pulls an accepted send, while it is still being uploaded (a live
        relay: bytes as soon as they are durable) or later."""
        if pull.key is None:
            raise RouteError(Status.BAD_REQUEST, "a pull on /send/get needs x-stream-key")
        record = await people.store.get_send(pull.key)
        if record is None or record.state is SendState.DENIED:
            raise RouteError(Status.GONE, "no such send (unknown, discarded or expired)")
        if record.to != pull.principal:
            raise RouteError(Status.FORBIDDEN, "this send is addressed to someone else")
        if record.state is SendState.OFFERED:
            raise RouteError(Status.CONFLICT, "accept the send first (/send/accept)")
        # What the addressee holds already counts as delivered.
        await people.store.count_delivered(pull.key, pull.offset)
        return StreamContent(pull.key, live=True, readers=[record.to], route=SEND_ROUTE)

    @app.request("/send/done", auth=auth)
    @unavailable_as_503
    async def done(request: RequestContext) -> dict[str, Any]:
        record, body = await addressed(request)
        stream = await people.services.store.get(record.key)
        if stream is None or stream.state is not StreamState.COMPLETE or stream.sha256 is None:
            raise RouteError(Status.CONFLICT, "the sender has not uploaded every byte yet")
        # The receiver may say what it holds: a different digest is not a delivery.
        held = body.get("sha256")
        if held is not None and (not isinstance(held, str) or not SHA256_HEX.fullmatch(held)):
            raise RouteError(Status.BAD_REQUEST, '"sha256" must be 64 lowercase hex digits')
        if held is not None and held != stream.sha256:
            raise RouteError(
                Status.CHECKSUM_MISMATCH,
                f"what you hold has sha256 {held}, the upload has {stream.sha256}: pull again",
            )
        before = await people.store.set_send_state(
            record.key, SendState.DELIVERED, [SendState.OFFERED, SendState.ACCEPTED]
        )
        if before is None or before is SendState.DENIED:
            raise RouteError(Status.GONE, "this send was denied and discarded")
        if before is not SendState.DELIVERED:
            await people.store.count_delivered(record.key, record.size)
            await people.store.schedule_purge(record.key, time.time() + people.settings.send_keep)
            await people.notify(
                record.sender,
                "stream-delivered",
                record.to,
                {"key": record.key, "to": record.to, "size": record.size, "sha256": stream.sha256},
            )
        return {"key": record.key, "state": "delivered", "sha256": stream.sha256}

    @app.request("/send/refuse", auth=auth)
    @unavailable_as_503
    async def refuse(request: RequestContext) -> dict[str, Any]:
        body = json_object(request)
        names, refused = body.get("names"), body.get("refuse", True)
        if (
            not isinstance(names, list)
            or not all(isinstance(n, str) and PRINCIPAL.fullmatch(n) for n in names)
            or not isinstance(refused, bool)
        ):
            raise RouteError(
                Status.BAD_REQUEST, 'payload must be {"names": ["@name", ...], "refuse": bool}'
            )
        await people.store.set_refused(principal_of(request), names, refused)
        return {"names": names, "refuse": refused}
