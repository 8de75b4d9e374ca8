"""A real browser for the page's tests: Debian's headless ``chromium`` driven through its
``chromedriver`` by Selenium (``scripts/setup --dev`` installs both when missing). Each test
gets a fresh profile; servers are ``xstream-server`` child processes on known ports."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from tests.conftest import REPO, ServerProcess, SpawnServer, _free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
OUTPUT = REPO / "tests" / "output"

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed (scripts/setup --dev)",
        allow_module_level=True,
    )


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--window-size=1000,820",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


@dataclass
class PageServer:
    """An ``xstream-server`` child with fixed ports, so that it can be killed and started
    again where the page expects it."""

    spawn: SpawnServer
    data_dir: Path
    http_port: int
    tcp_port: int
    app: str
    env: dict[str, str]
    process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    def start(self) -> PageServer:
        self.process = self.spawn(
            *("--port", str(self.tcp_port), "--http-port", str(self.http_port)),
            *("--lease-seconds", "1", "--app", self.app),
            env=self.env,
            data_dir=self.data_dir,
        )
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()


@pytest.fixture
def page_server(spawn_server: SpawnServer, tmp_path: Path) -> Callable[..., PageServer]:
    def start(app: str = "handlers:app", **env: str) -> PageServer:
        server = PageServer(spawn_server, tmp_path / "data", _free_port(), _free_port(), app, env)
        return server.start()

    return start


def pattern_file(directory: Path, name: str, size: int) -> tuple[Path, str]:
    """A file of deterministic, non-repeating bytes, and its sha256."""
    count = size // 32 + 1
    data = b"".join(hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(count))[:size]
    path = directory / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def choose(driver: webdriver.Chrome, *files: Path) -> None:
    """Pick files with the page's own file input, as a person does."""
    chooser = driver.find_element("css selector", "#files")
    chooser.send_keys("\n".join(str(f) for f in files))


def card(driver: webdriver.Chrome, name: str) -> WebElement:
    return driver.find_element("css selector", f'.card[data-name="{name}"]')


def wait_for(
    driver: webdriver.Chrome, condition: Callable[[], object], timeout: float = 60
) -> None:
    WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda _: condition())


def data(driver: webdriver.Chrome, name: str, field: str) -> str:
    value = card(driver, name).get_attribute(f"data-{field}")
    return value or ""


def wait_state(driver: webdriver.Chrome, name: str, *states: str, timeout: float = 60) -> None:
    try:
        wait_for(driver, lambda: data(driver, name, "state") in states, timeout)
    except Exception as exc:
        raise AssertionError(
            f"{name}: state {data(driver, name, 'state')!r}, wanted {states}; "
            f"message {card(driver, name).find_element('css selector', '.message').text!r}"
        ) from exc


def save_screenshot(driver: webdriver.Chrome, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / name
    driver.save_screenshot(str(path))
    return path


def open_page(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url)
    wait_for(
        driver, lambda: driver.find_element("css selector", "body").get_attribute("data-ready")
    )
