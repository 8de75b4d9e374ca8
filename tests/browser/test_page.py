"""The upload page in a real headless Chromium against a real server: uploads with the right
sha256, a reload mid-upload resumes from the server's durable offset, pause and resume, refusals
shown as sentences, and a server killed and restarted mid-upload. Uploads that must still be
running when the test acts on them are slowed with the page's ``?rate=`` (bytes per second)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from selenium import webdriver

from tests.browser.conftest import (
    PageServer,
    card,
    choose,
    data,
    open_page,
    pattern_file,
    save_screenshot,
    wait_for,
    wait_state,
)

MiB = 1024 * 1024
StartServer = Callable[..., PageServer]


def stream_status(server: PageServer, key: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}/stream-status",
        data=json.dumps({"key": key}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        status: dict[str, object] = json.load(answer)
        return status


def stored(server: PageServer, key: str) -> bytes:
    return (server.data_dir / "streams" / "complete" / key).read_bytes()


def test_the_page_uploads_files_and_shows_their_sha256(
    browser: webdriver.Chrome, page_server: StartServer, tmp_path: Path
) -> None:
    server = page_server()
    first, first_digest = pattern_file(tmp_path, "holiday-video.mp4", 64 * MiB + 123)
    second, second_digest = pattern_file(tmp_path, "notes.txt", 40_000)
    open_page(browser, server.url)
    started = time.monotonic()
    choose(browser, first, second)
    for name, digest in ((first.name, first_digest), (second.name, second_digest)):
        wait_state(browser, name, "done")
        assert data(browser, name, "sha256") == digest
        shown = card(browser, name).find_element("css selector", ".sha256").text
        assert shown == digest
        key = data(browser, name, "key")
        assert card(browser, name).find_element("css selector", ".key").text == key
        assert "checked in your browser" in card(browser, name).text
    elapsed = time.monotonic() - started
    key = data(browser, first.name, "key")
    assert stored(server, key) == first.read_bytes()
    assert stream_status(server, key)["state"] == "complete"
    path = save_screenshot(browser, "upload-page.png")
    assert path.stat().st_size > 10_000
    print(
        f"browser upload of {first.stat().st_size + second.stat().st_size} bytes: {elapsed:.2f} s"
    )


def test_a_reload_mid_upload_resumes_from_the_durable_offset(
    browser: webdriver.Chrome, page_server: StartServer, tmp_path: Path
) -> None:
    server = page_server()
    path, digest = pattern_file(tmp_path, "reloaded.bin", 8 * MiB)
    open_page(browser, server.url + f"?rate={2 * MiB}")
    choose(browser, path)
    wait_for(browser, lambda: int(data(browser, path.name, "sent") or 0) >= 3 * MiB)
    key = data(browser, path.name, "key")
    browser.refresh()
    open_page(browser, server.url + f"?rate={2 * MiB}")
    # The page remembers the interrupted upload and asks for the file again.
    pending = browser.find_element("css selector", "#pending")
    wait_for(browser, lambda: pending.is_displayed())
    assert path.name in pending.text
    durable = stream_status(server, key)["offset"]
    assert isinstance(durable, int)
    assert durable >= 2 * MiB
    # It shows how much the server holds, as /stream-status tells it.
    entry = pending.find_element("css selector", f'li[data-name="{path.name}"]')
    wait_for(browser, lambda: entry.get_attribute("data-offset") == str(durable))
    save_screenshot(browser, "upload-page-after-reload.png")
    choose(browser, path)
    wait_state(browser, path.name, "done")
    assert data(browser, path.name, "key") == key
    assert int(data(browser, path.name, "resumed-from")) == durable
    assert data(browser, path.name, "sha256") == digest
    assert "Resumed at" in card(browser, path.name).text
    assert stored(server, key) == path.read_bytes()
    assert not browser.find_element("css selector", "#pending").is_displayed()


def test_pause_and_resume(
    browser: webdriver.Chrome, page_server: StartServer, tmp_path: Path
) -> None:
    server = page_server()
    path, digest = pattern_file(tmp_path, "paused.bin", 6 * MiB)
    open_page(browser, server.url + f"?rate={2 * MiB}")
    choose(browser, path)
    wait_for(browser, lambda: int(data(browser, path.name, "sent") or 0) >= 2 * MiB)
    wait_for(browser, lambda: "left" in card(browser, path.name).text)  # rate and time left
    save_screenshot(browser, "upload-page-uploading.png")
    card(browser, path.name).find_element("css selector", ".pause").click()
    wait_state(browser, path.name, "paused")
    key = data(browser, path.name, "key")
    # The server settles the paused window after the socket closes: wait until what it
    # holds covers what the page had sent (the bytes queued before the close arrive first).
    wait_for(browser, lambda: int(str(stream_status(server, key)["offset"])) >= 2 * MiB)
    offset = stream_status(server, key)["offset"]
    assert isinstance(offset, int)
    assert 2 * MiB <= offset < 6 * MiB
    assert "Paused" in card(browser, path.name).text
    card(browser, path.name).find_element("css selector", ".resume").click()
    wait_state(browser, path.name, "uploading")
    # The resume starts where the server is: never before what it said it held.
    assert int(data(browser, path.name, "resumed-from")) >= offset
    # Paused again, the same file chosen again resumes its card instead of racing it.
    card(browser, path.name).find_element("css selector", ".pause").click()
    wait_state(browser, path.name, "paused")
    choose(browser, path)
    wait_state(browser, path.name, "done")
    assert len(browser.find_elements("css selector", ".card")) == 1
    assert int(data(browser, path.name, "resumed-from")) >= offset
    assert data(browser, path.name, "sha256") == digest
    assert stored(server, key) == path.read_bytes()


def test_refusals_are_shown_as_sentences(
    browser: webdriver.Chrome, page_server: StartServer, tmp_path: Path
) -> None:
    server = page_server(XSTREAM_STORAGE_RESERVE=str(1 << 62))  # nothing left to grant
    path, _ = pattern_file(tmp_path, "too-much.bin", MiB)
    open_page(browser, server.url)
    choose(browser, path)
    wait_state(browser, path.name, "error")
    assert data(browser, path.name, "status") == "507"
    assert "out of storage" in card(browser, path.name).text
    save_screenshot(browser, "upload-page-refused.png")
    open_page(browser, server.url + "?route=/no-such-route")
    choose(browser, path)
    wait_state(browser, path.name, "error")
    assert data(browser, path.name, "status") == "404"
    assert "No such upload route" in card(browser, path.name).text


@pytest.mark.parametrize(
    ("route", "status", "sentence"),
    [
        ("/small", "413", "too large for this server"),
        ("/members", "401", "sign in first"),
        ("/closed", "403", "Not allowed to upload here"),
    ],
)
def test_refusals_by_the_route(
    browser: webdriver.Chrome,
    page_server: StartServer,
    tmp_path: Path,
    route: str,
    status: str,
    sentence: str,
) -> None:
    server = page_server(app="tests.browser.app:app")
    path, _ = pattern_file(tmp_path, "refused.bin", 100_000)
    open_page(browser, server.url + f"?route={route}")
    choose(browser, path)
    wait_state(browser, path.name, "error")
    assert data(browser, path.name, "status") == status
    assert sentence in card(browser, path.name).text


def test_the_page_resumes_by_itself_after_the_server_restarts(
    browser: webdriver.Chrome, page_server: StartServer, tmp_path: Path
) -> None:
    server = page_server()
    path, digest = pattern_file(tmp_path, "survivor.bin", 8 * MiB)
    open_page(browser, server.url + f"?rate={2 * MiB}")
    choose(browser, path)
    wait_for(browser, lambda: int(data(browser, path.name, "sent") or 0) >= 3 * MiB)
    key = data(browser, path.name, "key")
    server.kill()
    wait_state(browser, path.name, "reconnecting")
    server.start()
    wait_state(browser, path.name, "done", timeout=90)
    assert data(browser, path.name, "key") == key
    assert data(browser, path.name, "sha256") == digest
    assert stored(server, key) == path.read_bytes()
