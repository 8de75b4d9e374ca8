"""Presence (PROTOCOL §7): register, list, lookup, expiry, monitors keeping a principal
online; real Redis and sockets."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from xstream_server.client import AuthenticationError, RequestError
from xstream_server.client.people import people

from .apps import bearer
from .conftest import Login
from .support import eventually


def names(rows: list[dict[str, Any]]) -> list[str]:
    return [row["name"] for row in rows]


async def test_register_list_and_lookup(login: Login) -> None:
    alice, bob = await login("@alice"), await login("@bob")
    before = time.time()
    answer = await alice.register("udp://10.0.0.1:5000")
    assert answer["name"] == "@alice"
    assert before + 119 < answer["expires"] < time.time() + 121
    await bob.register()
    rows = await bob.online()
    assert names(rows) == ["@alice", "@bob"]
    assert rows[0]["identity"] == "udp://10.0.0.1:5000"
    assert rows[0]["seen"] >= before - 1
    assert names(await alice.online(["@bob", "@carol"])) == ["@bob"]
    assert await alice.online(["@carol"]) == []


async def test_a_principal_is_required(login: Login) -> None:
    anonymous = await login("@x")
    for route in ("/presence/register", "/presence/list", "/presence/lookup", "/monitor"):
        with pytest.raises(AuthenticationError):
            await anonymous.connection.request(route, json={})
        with pytest.raises(AuthenticationError) as refused:
            await anonymous.connection.request(route, json={}, authorization="Bearer bad")
        assert refused.value.status == 401


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/presence/lookup", {"names": "@bob"}),
        ("/presence/lookup", {"names": ["bob"]}),
        ("/presence/register", {"identity": 5}),
        ("/monitor", {"since": "not an id"}),
        ("/monitor/ack", {"ids": "1-0"}),
    ],
)
async def test_bad_payloads_get_400(login: Login, route: str, body: dict[str, Any]) -> None:
    me = await login("@alice")
    with pytest.raises(RequestError) as refused:
        await me._call(route, body)
    assert refused.value.status == 400


async def test_registration_expires(make_people_server: Callable[..., Any]) -> None:
    async with make_people_server(presence_expiry=0.5) as server:
        async with await people(
            f"127.0.0.1:{server.port}", authorization=bearer("@alice")
        ) as alice:
            await alice.register()
            assert names(await alice.online()) == ["@alice"]
            await eventually(alice.online, lambda rows: rows == [])
            await alice.register()  # a heartbeat brings it back
            assert names(await alice.online(["@alice"])) == ["@alice"]


async def test_an_open_monitor_keeps_its_principal_online(
    make_people_server: Callable[..., Any],
) -> None:
    async with make_people_server(presence_expiry=0.3) as server:
        address = f"127.0.0.1:{server.port}"
        async with await people(address, authorization=bearer("@bob")) as bob:
            watcher = await people(address, authorization=bearer("@alice"))
            await bob.monitor()
            # Several expiry periods later @bob is still online: the monitor's hold is
            # renewed while it is open.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                assert names(await watcher.online(["@bob"])) == ["@bob"]
            await watcher.close()


async def test_closing_a_monitor_takes_its_principal_offline_at_once(login: Login) -> None:
    bob, alice = await login("@bob"), await login("@alice")
    await bob.monitor()
    assert names(await alice.online()) == ["@bob"]
    bob.connection.abort()
    # The presence expiry is 120 s here: only the monitor's closing can take @bob offline.
    await eventually(lambda: alice.online(["@bob"]), lambda rows: rows == [], 5.0)


async def test_closing_a_monitor_keeps_a_running_registration(login: Login) -> None:
    bob, alice = await login("@bob"), await login("@alice")
    await bob.register()
    await bob.monitor()
    bob.connection.abort()
    # The monitor's hold is gone, but the registration (120 s) still runs.
    await eventually(lambda: alice.online(["@bob"]), lambda rows: names(rows) == ["@bob"], 2.0)
