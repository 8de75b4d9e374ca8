"""The ``Dockerfile`` and ``compose.yaml``, checked where no Docker engine runs: both files
are parsed, and the commands, environment and ports they give are run on this host, as
real ``xstream-server`` processes against the tests' Redis. (What this cannot check: that
the image builds, and the paths inside it.)"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, ServerProcess
from tests.durability.support import free_port
from tests.fleet.support import finish, start, workers
from xstream_server.settings import ServerSettings

BIN = Path(sys.executable).parent  # where the project's console scripts are installed


@dataclass
class Dockerfile:
    env: dict[str, str] = field(default_factory=dict)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    healthcheck_options: list[str] = field(default_factory=list)
    expose: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    user: str = "root"


def read_dockerfile() -> Dockerfile:
    """The instructions this test looks at (``\\`` continuations joined, comments dropped)."""
    text = (REPO / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    found = Dockerfile()
    for instruction in "\n".join(lines).replace("\\\n", " ").splitlines():
        if not instruction.strip():
            continue
        name, _, rest = instruction.strip().partition(" ")
        rest = rest.strip()
        match name.upper():
            case "ENV":
                for pair in shlex.split(rest):
                    key, _, value = pair.partition("=")
                    found.env[key] = value
            case "CMD":
                found.cmd = json.loads(rest)  # the exec form: no shell in between
            case "HEALTHCHECK":
                options, _, command = rest.partition(" CMD ")
                found.healthcheck_options = options.split()
                found.healthcheck = json.loads(command)
            case "EXPOSE":
                found.expose += rest.split()
            case "VOLUME":
                found.volumes += rest.split()
            case "USER":
                found.user = rest
    return found


def read_compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
    return compose


def check_settings(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``XSTREAM_*`` name is a setting the server reads, with a value it takes."""
    fields = set(ServerSettings.model_fields)
    for name, value in environment.items():
        if name.startswith("XSTREAM_"):
            assert name.removeprefix("XSTREAM_").lower() in fields, name
            monkeypatch.setenv(name, str(value))
    ServerSettings()  # raises on a value the server would refuse


def on_this_host(command: list[str]) -> list[str]:
    """An image's command as it runs here: its ``python`` is ours, its scripts are ours."""
    program = command[0]
    if program == "python":
        return [sys.executable, *command[1:]]
    return [str(BIN / program), *command[1:]]


def host_environment(image_env: dict[str, str], data_dir: Path, redis_url: str) -> dict[str, str]:
    """The image's environment, with loopback, free ports, a temporary data directory and
    the tests' Redis in place of what only makes sense in a container."""
    return {
        **os.environ,
        **image_env,
        "XSTREAM_HOST": "127.0.0.1",
        "XSTREAM_HTTP_HOST": "127.0.0.1",
        "XSTREAM_PORT": str(free_port()),
        "XSTREAM_HTTP_PORT": str(free_port()),
        "XSTREAM_DATA_DIR": str(data_dir),
        "XSTREAM_REDIS_URL": redis_url,
    }


def health(command: list[str], env: dict[str, str]) -> int:
    return subprocess.run(on_this_host(command), env=env, timeout=30, check=False).returncode


def test_the_image_runs_workers_as_a_user_with_a_readiness_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = read_dockerfile()
    assert image.user not in ("root", "0", "")
    assert int(image.env["XSTREAM_WORKERS"]) >= 2
    assert sorted(image.expose) == sorted(
        [image.env["XSTREAM_PORT"], image.env["XSTREAM_HTTP_PORT"]]
    )
    assert image.volumes == [image.env["XSTREAM_DATA_DIR"]]
    assert image.cmd == ["xstream-server"]
    assert image.healthcheck[:2] == ["python", "-c"] and "/readyz" in image.healthcheck[2]
    assert any(option.startswith("--interval=") for option in image.healthcheck_options)
    check_settings(image.env, monkeypatch)


def test_the_image_command_and_health_check_work_on_this_host(
    redis_url: str, tmp_path: Path
) -> None:
    image = read_dockerfile()
    env = host_environment(image.env, tmp_path / "data", redis_url)
    server = ServerProcess([], env, command=on_this_host(image.cmd)).start()
    try:
        assert len(workers(server)) == int(image.env["XSTREAM_WORKERS"])
        assert health(image.healthcheck, env) == 0
        assert server.terminate() == 0  # the STOPSIGNAL, SIGTERM, drains and stops
        assert health(image.healthcheck, env) != 0  # nothing answers
        # Serving but not ready (no Redis): the health check fails too.
        env = host_environment(image.env, tmp_path / "data", "redis://127.0.0.1:1/0")
        env |= {"XSTREAM_WORKERS": "1", "XSTREAM_REDIS_TIMEOUT": "0.5"}
        server = ServerProcess([], env, command=on_this_host(image.cmd)).start()
        assert health(image.healthcheck, env) != 0
        assert server.terminate() == 0
    finally:
        server.kill()


def test_compose_has_a_durable_redis_and_two_instances_sharing_one_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = read_dockerfile()
    compose = read_compose()
    services = compose["services"]
    redis = services["redis"]
    assert redis["image"].split(":")[0] == "redis"  # the official image
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync always" in command
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    instances = {name: service for name, service in services.items() if "build" in service}
    assert len(instances) == 2
    published: list[str] = []
    for name, service in instances.items():
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        environment = {**image.env, **service["environment"]}
        assert environment["XSTREAM_REDIS_URL"].startswith("redis://redis:"), name
        check_settings(environment, monkeypatch)
        inside = {mapping.rsplit(":", 1)[1] for mapping in service["ports"]}
        assert inside == {environment["XSTREAM_PORT"], environment["XSTREAM_HTTP_PORT"]}, name
        published += [mapping.rsplit(":", 1)[0] for mapping in service["ports"]]
        assert service["volumes"] == [f"uploads:{environment['XSTREAM_DATA_DIR']}"], name
    assert len(published) == len(set(published)) == 4  # each instance on its own ports
    assert "uploads" in compose["volumes"]


async def test_compose_instances_make_a_fleet_on_this_host(redis_url: str, tmp_path: Path) -> None:
    """Each instance's environment (the image's, then the service's) on this host, with
    one data directory for the shared volume: both are ready, and a stream begun on one
    is finished on the other."""
    image = read_dockerfile()
    shared = tmp_path / "uploads"
    started: list[tuple[ServerProcess, dict[str, str]]] = []
    try:
        for service in read_compose()["services"].values():
            if "build" in service:
                env = host_environment({**image.env, **service["environment"]}, shared, redis_url)
                process = ServerProcess([], env, command=on_this_host(image.cmd)).start()
                started.append((process, env))
        for _, env in started:
            assert health(image.healthcheck, env) == 0
        (a, _), (b, _) = started
        body = os.urandom(300_000)
        link, key = await start(a.port, body, 100_000)
        link.close()
        await link.wait_closed(10)
        assert (await finish(b.port, body, key))["key"] == key
        for process, _ in started:
            assert process.terminate() == 0
    finally:
        for process, _ in started:
            process.kill()
