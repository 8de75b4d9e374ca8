"""The client's parts that need no server: resume records, progress feed, backoff."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from xstream_server.client import Progress, ProgressFeed, RetryPolicy
from xstream_server.client.resume_state import FileIdentity, ResumeStore, default_state_dir


def test_resume_store_matches_server_route_and_file(tmp_path: Path) -> None:
    file = tmp_path / "a.bin"
    file.write_bytes(b"first")
    store = ResumeStore(tmp_path / "state")
    identity = FileIdentity.of(file)
    store.save(store.new_entry("K1", "127.0.0.1:7070", "/upload-file", identity))

    assert store.find("127.0.0.1:7070", "/upload-file", identity) == store.by_key("K1")
    assert store.find("127.0.0.1:7070", "/other", identity) is None
    assert store.find("10.0.0.1:7070", "/upload-file", identity) is None
    # The same host at another port (the server's uTP port, say) finds the stream too...
    assert store.find("127.0.0.1:7071", "/upload-file", identity) == store.by_key("K1")
    # ...unless that address has an entry of its own.
    store.save(store.new_entry("K0", "127.0.0.1:7071", "/upload-file", identity, "utp"))
    assert store.find("127.0.0.1:7071", "/upload-file", identity) == store.by_key("K0")
    assert store.find("127.0.0.1:7070", "/upload-file", identity) == store.by_key("K1")
    saved = store.by_key("K0")
    assert saved is not None and saved.transport == "utp"
    store.remove("K0")

    # The file changed: its identity no longer matches, and a new entry replaces the old.
    file.write_bytes(b"second version")
    changed = FileIdentity.of(file)
    assert changed != identity
    assert store.find("127.0.0.1:7070", "/upload-file", changed) is None
    store.save(store.new_entry("K2", "127.0.0.1:7070", "/upload-file", changed))
    assert [e.key for e in store.entries()] == ["K2"]

    store.remove("K2")
    assert store.entries() == []


def test_unreadable_record_is_treated_as_empty(tmp_path: Path) -> None:
    store = ResumeStore(tmp_path)
    store.path.write_text("{not json")
    assert store.entries() == []
    file = tmp_path / "b.bin"
    file.write_bytes(b"x")
    store.save(store.new_entry("K", "h:1", "/r", FileIdentity.of(file)))
    assert [e.key for e in ResumeStore(tmp_path).entries()] == ["K"]


def test_state_directory_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XSTREAM_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "xstream"
    monkeypatch.setenv("XSTREAM_STATE_DIR", str(tmp_path / "explicit"))
    assert default_state_dir() == tmp_path / "explicit"
    monkeypatch.delenv("XSTREAM_STATE_DIR")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state_dir() == Path(os.path.expanduser("~/.local/state/xstream"))


async def test_progress_feed_never_lowers_acknowledged() -> None:
    seen: list[Progress] = []
    feed = ProgressFeed(100, seen.append)
    feed.update(acknowledged=40, sent=60)
    feed.update(acknowledged=30, sent=35)  # a resume may send again; confirmed stays
    feed.update(sent=35)  # unchanged: not reported twice
    assert seen == [Progress(40, 60, 100), Progress(40, 40, 100)]


async def test_progress_iterator_sees_the_latest_and_ends() -> None:
    feed = ProgressFeed(10)
    received: list[Progress] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for progress in feed:
            received.append(progress)
            first.set()

    consumer = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await first.wait()  # it holds the first snapshot and waits for a change
    feed.update(acknowledged=5, sent=5)
    feed.update(acknowledged=10, sent=10)
    feed.finish()
    async with asyncio.timeout(5):
        await consumer
    assert received[0] == Progress(0, 0, 10)
    assert received[-1] == Progress(10, 10, 10)
    assert [p.acknowledged for p in received] == sorted(p.acknowledged for p in received)


def test_backoff_grows_to_its_cap() -> None:
    policy = RetryPolicy(initial_delay=0.1, max_delay=1.0, multiplier=2.0, jitter=0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5, 10)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    jittery = RetryPolicy(initial_delay=1.0, jitter=0.25)
    assert all(0.75 <= jittery.delay(1) <= 1.25 for _ in range(100))
