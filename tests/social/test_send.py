"""Notifications and send-to-user (PROTOCOL §8) end to end: real Redis, sockets, files.

@alice sends to @bob; @bob monitors (or not), accepts or denies, says it is done; @alice
hears about each step on her own monitor."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from xstream_server.client import (
    AuthenticationError,
    RequestError,
    StreamGoneError,
    connect,
)
from xstream_server.client.people import People, people, receive, send
from xstream_server.server import Server

from .apps import bearer
from .conftest import Login
from .support import eventually, next_of_kind


def a_file(tmp_path: Path, size: int = 300_000, name: str = "photo.jpg") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def address(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


async def known(me: People) -> None:
    """A principal is an addressee once it was seen (registered or monitored)."""
    await me.register()


async def test_a_monitor_receives_the_offer(
    login: Login, people_server: Server, tmp_path: Path
) -> None:
    bob = await login("@bob")
    assert await bob.monitor() == "@bob"
    path = a_file(tmp_path)
    result = await send(
        str(path), to="@bob", server=address(people_server), authorization=bearer("@alice")
    )
    offer = await next_of_kind(bob, "stream-offer")
    assert offer.sender == "@alice"
    assert offer.payload == {
        "key": result.key,
        "from": "@alice",
        "name": "photo.jpg",
        "size": path.stat().st_size,
        "metadata": {},
    }
    assert result.sha256 == sha256(path)


async def test_an_offline_receiver_gets_everything_on_reconnect(
    login: Login, people_server: Server, tmp_path: Path
) -> None:
    bob = await login("@bob")
    await known(bob)
    await bob.close()  # offline during both uploads
    server, alice = address(people_server), bearer("@alice")
    first = await send(
        str(a_file(tmp_path, 1000, "a")), to="@bob", server=server, authorization=alice
    )
    second = await send(
        str(a_file(tmp_path, 2000, "b")), to="@bob", server=server, authorization=alice
    )

    bob = await login("@bob")
    await bob.monitor()
    one, two = await bob.next_notification(), await bob.next_notification()
    assert [one.payload["key"], two.payload["key"]] == [first.key, second.key]
    await bob.close()

    # ``since`` the first: only the second; after acknowledging the first, {} starts there.
    bob = await login("@bob")
    await bob.monitor(since=one.id)
    assert (await bob.next_notification()).id == two.id
    assert await bob.ack([one.id]) == 1
    assert await bob.ack([one.id]) == 0
    await bob.close()
    bob = await login("@bob")
    await bob.monitor()
    assert (await bob.next_notification()).id == two.id


async def test_a_notification_added_by_another_process_reaches_the_monitor(
    make_people_server: Callable[..., Any], tmp_path: Path
) -> None:
    async with make_people_server() as here, make_people_server() as there:
        async with await people(address(here), authorization=bearer("@bob")) as bob:
            await bob.monitor()
            result = await send(
                str(a_file(tmp_path, 5000)),
                to="@bob",
                server=address(there),
                authorization=bearer("@alice"),
            )
            offer = await next_of_kind(bob, "stream-offer")
            assert offer.payload["key"] == result.key


async def test_accept_notifies_the_sender(
    login: Login, people_server: Server, tmp_path: Path
) -> None:
    alice, bob = await login("@alice"), await login("@bob")
    await alice.monitor()
    await bob.monitor()
    result = await send(
        str(a_file(tmp_path)),
        to="@bob",
        server=address(people_server),
        authorization=bearer("@alice"),
    )
    offer = await next_of_kind(bob, "stream-offer")
    assert (await bob.accept(offer.payload["key"]))["state"] == "accepted"
    accepted = await next_of_kind(alice, "stream-accepted")
    assert accepted.sender == "@bob"
    assert accepted.payload == {"key": result.key, "to": "@bob"}
    # Accepting twice is harmless and tells the sender nothing new.
    assert (await bob.accept(result.key))["state"] == "accepted"


async def test_done_notifies_delivery_and_status_counts_delivered(
    login: Login, people_server: Server, tmp_path: Path
) -> None:
    alice, bob = await login("@alice"), await login("@bob")
    await alice.monitor()
    await known(bob)
    path = a_file(tmp_path)
    result = await send(
        str(path), to="@bob", server=address(people_server), authorization=bearer("@alice")
    )
    status = await alice.status(result.key)
    assert status["delivered"] == 0 and status["send-state"] == "offered"
    await bob.accept(result.key)
    answer = await bob.done(result.key)
    assert answer["sha256"] == sha256(path)
    delivered = await next_of_kind(alice, "stream-delivered")
    assert delivered.payload == {
        "key": result.key,
        "to": "@bob",
        "size": path.stat().st_size,
        "sha256": sha256(path),
    }
    status = await alice.status(result.key)
    assert status["delivered"] == path.stat().st_size
    assert status["send-state"] == "delivered"


async def test_done_with_a_different_sha256_is_460_and_delivers_nothing(
    login: Login, people_server: Server, tmp_path: Path
) -> None:
    alice, bob = await login("@alice"), await login("@bob")
    await alice.monitor()
    await known(bob)
    path = a_file(tmp_path)
    result = await send(
        str(path), to="@bob", server=address(people_server), authorization=bearer("@alice")
    )
    await bob.accept(result.key)
    with pytest.raises(RequestError) as malformed:
        await bob.done(result.key, "not-a-digest")
    assert malformed.value.status == 400
    with pytest.raises(RequestError) as different:
        await bob.done(result.key, "0" * 64)
    assert different.value.status == 460
    assert sha256(path) in str(different.value)
    status = await alice.status(result.key)
    assert status["send-state"] == "accepted" and status["delivered"] < path.stat().st_size
    answer = await bob.done(result.key, sha256(path))
    assert answer["state"] == "delivered"
    delivered = await next_of_kind(alice, "stream-delivered")
    assert delivered.payload["sha256"] == sha256(path)


async def test_deny_stops_a_sender_mid_stream_and_resume_is_410(
    login: Login, people_server: Server
) -> None:
    alice_monitor, bob = await login("@alice"), await login("@bob")
    await alice_monitor.monitor()
    await bob.monitor()
    total = 1_000_000
    async with connect(address(people_server)) as conn:
        grant = await conn.negotiate(
            "/send",
            total,
            64 * 1024,
            metadata={"to": "@bob", "name": "big.iso"},
            authorization=bearer("@alice"),
        )
        await conn.send_raw(os.urandom(100_000))  # 10 %: the sender is still streaming
        offer = await next_of_kind(bob, "stream-offer")
        assert offer.payload["key"] == grant.key
        await bob.deny(grant.key, reason="no thanks")
        reply = await conn.completion(10)
        assert reply.status == 403
        assert reply.message == "denied by @bob: no thanks"
    denied = await next_of_kind(alice_monitor, "stream-denied")
    assert denied.payload == {"key": grant.key, "to": "@bob", "reason": "no thanks"}
    async with connect(address(people_server)) as conn:
        with pytest.raises(StreamGoneError):
            await conn.negotiate(
                "/send", total, 64 * 1024, key=grant.key, authorization=bearer("@alice")
            )
    # The addressee can neither accept it any more.
    with pytest.raises(StreamGoneError):
        await bob.accept(grant.key)


async def test_refusals(login: Login, people_server: Server, tmp_path: Path) -> None:
    bob, carol = await login("@bob"), await login("@carol")
    await known(bob)
    await known(carol)
    path, server = str(a_file(tmp_path, 1000)), address(people_server)
    # 401: no token, a bad one, an expired one.
    for authorization in (None, "Bearer bad", bearer("@alice", ttl=10, now=time.time() - 60)):
        async with connect(server) as conn:
            with pytest.raises(AuthenticationError) as refused:
                await conn.negotiate(
                    "/send", 10, 1024, metadata={"to": "@bob"}, authorization=authorization
                )
            assert refused.value.status == 401
    # 404: an addressee never seen; 400: none at all.
    with pytest.raises(RequestError) as unknown:
        await send(path, to="@nobody", server=server, authorization=bearer("@alice"))
    assert unknown.value.status == 404
    async with connect(server) as conn:
        with pytest.raises(RequestError) as missing:
            await conn.negotiate("/send", 10, 1024, authorization=bearer("@alice"))
        assert missing.value.status == 400
    # 403: @bob takes nothing from @alice (and takes again after).
    await bob.refuse(["@alice"])
    with pytest.raises(AuthenticationError) as blocked:
        await send(path, to="@bob", server=server, authorization=bearer("@alice"))
    assert blocked.value.status == 403
    await bob.refuse(["@alice"], refuse=False)
    result = await send(path, to="@bob", server=server, authorization=bearer("@alice"))
    # 403: only the addressee accepts, denies or says done; only the sender asks about it.
    for call in (carol.accept, carol.deny, carol.done, carol.status):
        with pytest.raises(AuthenticationError) as other:
            await call(result.key)
        assert other.value.status == 403
    # 410: no such send.
    with pytest.raises(StreamGoneError):
        await bob.accept("no-such-key-0000")
    # 409: done before every byte is in.
    async with connect(server) as conn:
        grant = await conn.negotiate(
            "/send", 5000, 1024, metadata={"to": "@bob"}, authorization=bearer("@alice")
        )
        await conn.send_raw(b"x" * 2000)
        with pytest.raises(RequestError) as early:
            await bob.done(grant.key)
        assert early.value.status == 409
        conn.abort()


async def test_delivered_content_is_deleted_after_the_keep_time(
    make_people_server: Callable[..., Any], tmp_path: Path
) -> None:
    async with make_people_server(send_keep=0.2) as server:
        async with await people(address(server), authorization=bearer("@bob")) as bob:
            await known(bob)
            result = await send(
                str(a_file(tmp_path, 4000)),
                to="@bob",
                server=address(server),
                authorization=bearer("@alice"),
            )
            await bob.done(result.key)
            assert server.engine is not None
            await eventually(
                lambda: server.engine.store.exists(result.key),
                lambda there: not there,
            )
            with pytest.raises(StreamGoneError):
                await bob.accept(result.key)


async def test_notifications_survive_a_server_kill_and_restart(
    spawn_server: Any, tmp_path: Path
) -> None:
    app = ("--app", "tests.social.apps:app")
    first = spawn_server(*app)
    server = f"127.0.0.1:{first.port}"
    async with await people(server, authorization=bearer("@bob")) as bob:
        await known(bob)
    result = await send(
        str(a_file(tmp_path, 8000)), to="@bob", server=server, authorization=bearer("@alice")
    )
    first.kill()  # SIGKILL: nothing is flushed on the way out
    second = spawn_server(*app)
    async with await people(f"127.0.0.1:{second.port}", authorization=bearer("@bob")) as bob:
        await bob.monitor()
        offer = await next_of_kind(bob, "stream-offer")
        assert offer.payload["key"] == result.key
        assert offer.payload["size"] == 8000


async def test_a_monitor_over_utp_gets_notifications_too(
    make_people_server: Callable[..., Any], tmp_path: Path
) -> None:
    async with make_people_server(utp_port=0) as server:
        assert server.utp_port is not None
        async with await people(
            f"127.0.0.1:{server.utp_port}", authorization=bearer("@bob"), transport="utp"
        ) as bob:
            await bob.monitor()
            result = await send(
                str(a_file(tmp_path, 20_000)),
                to="@bob",
                server=address(server),
                authorization=bearer("@alice"),
            )
            offer = await next_of_kind(bob, "stream-offer")
            assert offer.payload["key"] == result.key
            # The connection goes on answering requests between notifications.
            assert [row["name"] for row in await bob.online()] == ["@bob"]


async def test_live_relay_the_receiver_pulls_while_the_sender_uploads(
    make_people_server: Callable[..., Any], tmp_path: Path
) -> None:
    # Bytes become durable (and so relayed) at checkpoints: often, here.
    async with make_people_server(checkpoint_seconds=0.05) as people_server:
        server = address(people_server)
        alice = await people(server, authorization=bearer("@alice"))
        bob = await people(server, authorization=bearer("@bob"))
        await alice.monitor()
        await bob.monitor()
        total = 2_000_000
        data = os.urandom(total)
        async with connect(server) as upload:
            grant = await upload.negotiate(
                "/send",
                total,
                64 * 1024,
                metadata={"to": "@bob", "name": "live.bin"},
                authorization=bearer("@alice"),
            )
            sent = total // 10
            await upload.send_raw(data[:sent])  # the sender is at 10 %
            offer = await next_of_kind(bob, "stream-offer")
            await bob.accept(grant.key)
            seen: list[int] = []
            receiving = asyncio.create_task(
                receive(
                    grant.key,
                    tmp_path / "live.bin",
                    server=server,
                    authorization=bearer("@bob"),
                    on_progress=lambda progress: seen.append(progress.acknowledged),
                )
            )
            # The sender trickles on (a checkpoint follows a write); the receiver gets
            # bytes before the sender has sent half.
            while not (seen and seen[-1] > 0):
                assert sent < total // 2, "nothing relayed while the sender uploads"
                await upload.send_raw(data[sent : sent + 4096])
                sent += 4096
                await asyncio.sleep(0.01)
            assert not receiving.done()
            await upload.send_raw(data[sent:])
            assert (await upload.completion(30)).status == 0
            received = await receiving
        assert offer.payload["size"] == total
        assert received.sha256 == hashlib.sha256(data).hexdigest()
        assert (tmp_path / "live.bin").read_bytes() == data
        delivered = await next_of_kind(alice, "stream-delivered")
        assert delivered.payload["sha256"] == received.sha256
        assert (await alice.status(grant.key))["delivered"] == total
        await alice.close()
        await bob.close()


async def test_store_and_forward_the_receiver_offline_during_the_whole_upload(
    login: Login, people_server: Server, tmp_path: Path
) -> None:
    bob = await login("@bob")
    await known(bob)
    await bob.close()
    alice = await login("@alice")
    await alice.monitor()
    path, server = a_file(tmp_path, 700_000), address(people_server)
    result = await send(str(path), to="@bob", server=server, authorization=bearer("@alice"))
    # Later @bob comes online, finds the offer, accepts and downloads.
    bob = await login("@bob")
    await bob.monitor()
    offer = await next_of_kind(bob, "stream-offer")
    assert offer.payload["key"] == result.key
    await bob.accept(result.key)
    received = await receive(
        result.key, tmp_path / "got.jpg", server=server, authorization=bearer("@bob")
    )
    assert received.sha256 == sha256(path) == result.sha256
    assert await next_of_kind(alice, "stream-accepted")
    delivered = await next_of_kind(alice, "stream-delivered")
    assert delivered.payload == {
        "key": result.key,
        "to": "@bob",
        "size": 700_000,
        "sha256": result.sha256,
    }


async def test_only_the_addressee_pulls_and_only_after_accepting(
    login: Login, people_server: Server, tmp_path: Path
) -> None:
    bob, carol = await login("@bob"), await login("@carol")
    await known(bob)
    server = address(people_server)
    result = await send(
        str(a_file(tmp_path, 5000)), to="@bob", server=server, authorization=bearer("@alice")
    )
    for who, status in (("@bob", 409), ("@carol", 403), ("@alice", 403)):
        async with connect(server) as conn:
            with pytest.raises(RequestError) as refused:
                await conn.pull("/send/get", key=result.key, authorization=bearer(who))
            assert refused.value.status == status, who
    async with connect(server) as conn:
        with pytest.raises(AuthenticationError):
            await conn.pull("/send/get", key=result.key)
    await bob.accept(result.key)
    got = await receive(result.key, tmp_path / "x", server=server, authorization=bearer("@bob"))
    assert got.size == 5000
    assert carol  # carol saw nothing of it: her status request is refused too
    with pytest.raises(AuthenticationError):
        await carol.status(result.key)


class DownstreamCutter:
    """A loopback proxy dropping connection ``i`` once ``cuts[i]`` bytes went from the
    server to the client (later connections pass untouched): a download cut mid-way."""

    def __init__(self, target: int, cuts: list[int]) -> None:
        self.target, self.cuts, self.connections = target, cuts, 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limit = self.cuts[self.connections] if self.connections < len(self.cuts) else None
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, left: int | None
        ) -> None:
            while data := await source.read(65536):
                if left is not None:
                    data, left = data[:left], left - len(data[:left])
                sink.write(data)
                await sink.drain()
                if left == 0:
                    return

        tasks = [
            asyncio.create_task(pump(reader, up_writer, None)),
            asyncio.create_task(pump(up_reader, writer, limit)),
        ]
        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        writer.transport.abort()
        up_writer.transport.abort()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_a_download_cut_several_times_resumes_to_the_right_sha256(
    login: Login, people_server: Server, tmp_path: Path
) -> None:
    bob = await login("@bob")
    await known(bob)
    path = a_file(tmp_path, 1_500_000)
    result = await send(
        str(path), to="@bob", server=address(people_server), authorization=bearer("@alice")
    )
    await bob.accept(result.key)
    # Three connections cut after 300 KB, 200 KB and 500 KB of the server's bytes each.
    cutter = DownstreamCutter(people_server.port, [300_000, 200_000, 500_000])
    through = await cutter.start()
    try:
        got = await receive(
            result.key, tmp_path / "got.jpg", server=through, authorization=bearer("@bob")
        )
    finally:
        await cutter.close()
    assert cutter.connections >= 4  # three cut pulls, then the ones that finish
    assert got.sha256 == sha256(path)
    assert (tmp_path / "got.jpg").read_bytes() == path.read_bytes()
