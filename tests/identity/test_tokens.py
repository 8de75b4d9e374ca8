"""Identities (PROTOCOL §6): tokens issued and verified, the server's secret, the
``TokenAuth`` policy, and the default app's use of it over real sockets and Redis."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from pydantic import SecretStr

from tests.conftest import ServerFactory
from tests.wire import Wire, status
from xstream_server import RouteError, Status, TokenAuth
from xstream_server.identity import (
    SECRET_FILE,
    InvalidToken,
    issue_token,
    parse_duration,
    server_secret,
    valid_principal,
    verify_token,
)
from xstream_server.settings import ServerSettings

SECRET = "s" * 40
OTHER_SECRET = "o" * 40


def test_principal_names() -> None:
    assert valid_principal("@alice")
    assert valid_principal("@a.b_c-9")
    assert valid_principal("@" + "x" * 64)
    for bad in ("alice", "@", "@Alice", "@al ice", "@" + "x" * 65, "@ali/ce", "@é"):
        assert not valid_principal(bad), bad
    with pytest.raises(ValueError, match="not a principal"):
        issue_token(SECRET, "alice")


def test_durations() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("1h") == 3600
    assert parse_duration("7d") == 7 * 86400
    for bad in ("", "0", "-1h", "1y", "h"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_issued_token_names_its_principal() -> None:
    token = issue_token(SECRET, "@alice", 60)
    assert verify_token(SECRET, token) == "@alice"


def test_expired_token_is_refused() -> None:
    token = issue_token(SECRET, "@alice", 60, now=time.time() - 120)
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(SECRET, token)


def test_token_of_another_secret_is_refused() -> None:
    token = issue_token(OTHER_SECRET, "@alice", 60)
    with pytest.raises(InvalidToken, match=r"(?i)signature"):
        verify_token(SECRET, token)


def test_tampered_token_is_refused() -> None:
    """Changing the principal in the claims breaks the signature."""
    header, claims, signature = issue_token(SECRET, "@alice", 60).split(".")
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    decoded["sub"] = "@mallory"
    forged = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match=r"(?i)signature"):
        verify_token(SECRET, f"{header}.{forged}.{signature}")


def test_unsigned_token_is_refused() -> None:
    """``alg: none`` is never accepted, whatever the token says."""
    unsigned = jwt.encode(
        {"iss": "xstream", "sub": "@alice", "iat": int(time.time()), "exp": 2**40},
        None,
        algorithm="none",
    )
    with pytest.raises(InvalidToken):
        verify_token(SECRET, unsigned)


def test_token_with_an_invalid_principal_is_refused() -> None:
    """Signed with the right secret but naming something that is not a principal."""
    now = int(time.time())
    claims = {"iss": "xstream", "sub": "Alice", "iat": now, "exp": now + 60}
    with pytest.raises(InvalidToken, match="principal"):
        verify_token(SECRET, jwt.encode(claims, SECRET.encode(), algorithm="HS256"))


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        issue_token("short", "@alice")
    with pytest.raises(ValueError, match="at least 32"):
        ServerSettings(auth_secret=SecretStr("short"))


def test_secret_is_made_once_in_the_data_directory(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "data")
    first = server_secret(settings)
    path = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert server_secret(settings) == first
    assert len(first) >= 32
    given = ServerSettings(data_dir=tmp_path / "data", auth_secret=SecretStr(SECRET))
    assert server_secret(given) == SECRET.encode()


async def test_policy_statuses() -> None:
    policy = TokenAuth(SECRET, allow={"@alice"})
    assert await policy(f"Bearer {issue_token(SECRET, '@alice')}") == "@alice"
    cases = {
        None: 401,
        "": 401,
        "Basic YWxpY2U6cHc=": 401,
        "Bearer not-a-token": 401,
        f"Bearer {issue_token(OTHER_SECRET, '@alice')}": 401,
        f"Bearer {issue_token(SECRET, '@alice', now=time.time() - 7200)}": 401,
        f"Bearer {issue_token(SECRET, '@bob')}": 403,
    }
    for credential, expected in cases.items():
        with pytest.raises(RouteError) as refused:
            await policy(credential)
        assert int(refused.value.status) == expected, credential
    optional = TokenAuth(SECRET, required=False)
    assert await optional(None) is None
    with pytest.raises(RouteError) as refused:
        await optional("Bearer junk")
    assert refused.value.status == Status.UNAUTHORIZED


def bearer(server_settings: ServerSettings, principal: str) -> str:
    return f"Bearer {issue_token(server_secret(server_settings), principal)}"


async def test_default_app_binds_streams_to_their_principal(make_server: ServerFactory) -> None:
    """Anonymous uploads still work; a token's upload belongs to its principal: another
    principal (or nobody) is refused 403 on resume and /stream-status; a bad token 401."""
    async with make_server() as server, await Wire.connect(server.port) as wire:
        alice, bob = bearer(server.settings, "@alice"), bearer(server.settings, "@bob")
        anonymous = await wire.request({"route": "/upload-file", "x-stream": "4:65536"})
        assert status(anonymous) == 0
        await wire.send_raw(b"anon")
        assert status(await wire.receive()) == 0
        # Anyone with the key may ask about an anonymous stream.
        key = anonymous.headers["x-stream-key"]
        asked = await wire.request(
            {"route": "/stream-status", "authorization": bob}, json.dumps({"key": key}).encode()
        )
        assert status(asked) == 0

        owned = await wire.request(
            {"route": "/upload-file", "x-stream": "10:65536", "authorization": alice}
        )
        assert status(owned) == 0
        key = owned.headers["x-stream-key"]
        await wire.send_raw(b"01234")
        await wire.close()
    async with make_server() as server, await Wire.connect(server.port) as wire:
        resume = {"route": "/upload-file", "x-stream": "10:65536", "x-stream-key": key}
        for credential, expected in ((bob, 403), (None, 403), ("Bearer forged", 401)):
            headers = dict(resume)
            if credential is not None:
                headers["authorization"] = credential
            refused = await wire.request(headers)
            assert (status(refused), refused.headers["x-stream"]) == (expected, "-1")
        for credential, expected in ((bob, 403), (alice, 0)):
            asked = await wire.request(
                {"route": "/stream-status", "authorization": credential},
                json.dumps({"key": key}).encode(),
            )
            assert status(asked) == expected
        accepted = await wire.request({**resume, "authorization": alice})
        assert status(accepted) == 0
        assert accepted.headers["x-stream-offset"] == "5"
        await wire.send_raw(b"56789")
        done = await wire.receive()
        assert status(done) == 0


async def test_tokens_required_when_the_server_says_so(make_server: ServerFactory) -> None:
    async with (
        make_server(auth_required=True, auth_secret=SECRET) as server,
        await Wire.connect(server.port) as wire,
    ):
        refused = await wire.request({"route": "/upload-file", "x-stream": "4:65536"})
        assert (status(refused), refused.headers["x-stream"]) == (401, "-1")
        assert "bearer token" in refused.headers["message"]
        token = issue_token(SECRET, "@carol")
        accepted = await wire.request(
            {"route": "/upload-file", "x-stream": "4:65536", "authorization": f"Bearer {token}"}
        )
        assert status(accepted) == 0
        await wire.send_raw(b"data")
        assert status(await wire.receive()) == 0
        # XSTREAM_AUTH_SECRET was given: no secret file was made.
        assert not (server.settings.data_dir / SECRET_FILE).exists()


def xstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xstream_server.cli.client", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


async def test_token_command_issues_what_the_server_accepts(make_server: ServerFactory) -> None:
    async with make_server() as server:
        data_dir = str(server.settings.data_dir)
        issued = xstream("token", "@dave", "--ttl", "10m", "--data-dir", data_dir)
        assert issued.returncode == 0, issued.stderr
        token = issued.stdout.strip()
        assert verify_token(server_secret(server.settings), token) == "@dave"
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 600
        described = xstream("token", "@dave", "--json", "--data-dir", data_dir)
        assert json.loads(described.stdout)["principal"] == "@dave"
        # The server takes it (its secret file was made by the command, or the other way).
        async with await Wire.connect(server.port) as wire:
            accepted = await wire.request(
                {"route": "/upload-file", "x-stream": "3:65536", "authorization": f"Bearer {token}"}
            )
            assert status(accepted) == 0
    bad = xstream("token", "alice", "--data-dir", data_dir)
    assert bad.returncode == 2
    assert "PRINCIPAL" in bad.stderr
    bad_ttl = xstream("token", "@alice", "--ttl", "forever", "--data-dir", data_dir)
    assert bad_ttl.returncode == 2
    env_secret = xstream("token", "@erin", env={"XSTREAM_AUTH_SECRET": SECRET})
    assert verify_token(SECRET, env_secret.stdout.strip()) == "@erin"
