"""Identities (PROTOCOL §6): principals named like ``@alice``, signed expiring bearer
tokens, the server's secret, and ``TokenAuth``, a ready ``auth=`` policy for app routes.

Tokens are JSON Web Tokens (PyJWT, HS256) signed with the server's secret: the
``XSTREAM_AUTH_SECRET`` setting when given, else a random secret the server keeps in its
data directory (``auth-secret``, mode 0600, made on first use). Anyone holding the secret
can issue tokens: ``xstream token @alice --ttl 1h`` does it on the server's machine.

    auth = TokenAuth()  # the server's secret; a token is required

    @app.stream("/inbox", auth=auth)
    async def inbox(upload: CompletedUpload) -> None:
        ...  # upload.principal is "@alice"
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import jwt

from .app import App, RouteError
from .private import private_directory
from .protocol import Status

if TYPE_CHECKING:
    from .settings import ServerSettings

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "SECRET_FILE",
    "InvalidToken",
    "TokenAuth",
    "bind_auth_policies",
    "issue_token",
    "parse_duration",
    "server_secret",
    "valid_principal",
    "verify_token",
]

PRINCIPAL: Final = re.compile(r"@[a-z0-9_.-]{1,64}")
SECRET_FILE: Final = "auth-secret"
DEFAULT_TOKEN_TTL: Final = 3600.0
_ALGORITHM: Final = "HS256"
_ISSUER: Final = "xstream"
# HS256 keys shorter than the hash (32 bytes) are weak (RFC 7518 §3.2).
_MIN_SECRET: Final = 32
_DURATION: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)")
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class InvalidToken(Exception):
    """A token that is malformed, badly signed, expired, or names no valid principal."""


def valid_principal(name: str) -> bool:
    """``@`` then 1–64 characters of ``[a-z0-9_.-]``."""
    return PRINCIPAL.fullmatch(name) is not None


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d``, ``2w`` → seconds (> 0)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if len(key) < _MIN_SECRET:
        raise ValueError(f"the auth secret must be at least {_MIN_SECRET} bytes long")
    return key


def issue_token(
    secret: str | bytes,
    principal: str,
    ttl: float = DEFAULT_TOKEN_TTL,
    *,
    now: float | None = None,
) -> str:
    """A bearer token for ``principal``, valid ``ttl`` seconds from ``now``."""
    if not valid_principal(principal):
        raise ValueError(f"{principal!r} is not a principal: '@' then 1-64 of [a-z0-9_.-]")
    if ttl <= 0:
        raise ValueError("a token's lifetime must be positive")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": _ISSUER,
        "sub": principal,
        "iat": issued,
        "exp": issued + max(1, round(ttl)),
    }
    return jwt.encode(claims, _key(secret), algorithm=_ALGORITHM)


def verify_token(secret: str | bytes, token: str, *, leeway: float = 0.0) -> str:
    """The principal a valid token names; ``InvalidToken`` (saying why) otherwise."""
    try:
        claims = jwt.decode(
            token,
            _key(secret),
            algorithms=[_ALGORITHM],  # never the token's own choice ("none", RS/HS confusion)
            issuer=_ISSUER,
            leeway=leeway,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"invalid token: {exc}") from exc
    principal = claims.get("sub")
    if not isinstance(principal, str) or not valid_principal(principal):
        raise InvalidToken("invalid token: it names no valid principal")
    return principal


def server_secret(settings: ServerSettings) -> bytes:
    """The server's token secret: ``settings.auth_secret`` (``XSTREAM_AUTH_SECRET``) when
    given, else the one kept in ``<data_dir>/auth-secret``, made (0600) on first use."""
    if settings.auth_secret is not None:
        return _key(settings.auth_secret.get_secret_value())
    return _stored_secret(settings.data_dir / SECRET_FILE)


def _stored_secret(path: Path) -> bytes:
    private_directory(path.parent)
    try:
        # O_EXCL: of two processes making it at once, one writes and both read its secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            os.write(fd, secrets.token_hex(32).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    secret = path.read_bytes().strip()
    if not secret:  # the writer has not written yet (or a crash left it empty)
        raise RuntimeError(f"{path} is empty: delete it to make a new secret")
    return _key(secret)


class TokenAuth:
    """An ``auth=`` policy: ``authorization: Bearer <token>`` → the token's principal.

    * no credential: ``401``, or anonymous (``None``) when ``required`` is false;
    * a credential that is not a valid, unexpired token of this server: ``401``;
    * a valid one whose principal ``allow`` rejects: ``403``.

    ``secret`` None: the server's secret (see ``server_secret``), bound when the server
    starts. ``required`` None: as the server's ``auth_required`` setting says.
    ``allow``: the principals let in (a collection, or a predicate); None lets in all.
    """

    def __init__(
        self,
        secret: str | bytes | None = None,
        *,
        required: bool | None = True,
        allow: Collection[str] | Callable[[str], bool] | None = None,
        leeway: float = 0.0,
    ) -> None:
        self._given = None if secret is None else _key(secret)
        self._secret = self._given
        self._settings: ServerSettings | None = None
        self._required = required
        self.required = required
        self._allow = allow
        self.leeway = leeway

    def bind(self, settings: ServerSettings) -> None:
        """Take what was left to the server: its secret (read, or made, when the first
        credential comes), whether a token is required."""
        self._settings = settings
        self._secret = self._given  # another server (a test's) may have another secret
        self.required = settings.auth_required if self._required is None else self._required

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            if self._settings is None:
                raise RuntimeError("TokenAuth has no secret: serve its app with xstream-server")
            self._secret = server_secret(self._settings)
        return self._secret

    def issue(self, principal: str, ttl: float = DEFAULT_TOKEN_TTL) -> str:
        return issue_token(self.secret, principal, ttl)

    def allowed(self, principal: str) -> bool:
        if self._allow is None:
            return True
        if callable(self._allow):
            return self._allow(principal)
        return principal in self._allow

    async def __call__(self, authorization: str | None) -> str | None:
        if authorization is None or not authorization.strip():
            if not self.required:  # (None: left to a server that never bound it: off)
                return None
            raise RouteError(Status.UNAUTHORIZED, "a bearer token is required")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RouteError(Status.UNAUTHORIZED, "authorization must be 'Bearer <token>'")
        try:
            principal = verify_token(self.secret, token.strip(), leeway=self.leeway)
        except InvalidToken as exc:
            raise RouteError(Status.UNAUTHORIZED, str(exc)) from None
        if not self.allowed(principal):
            raise RouteError(Status.FORBIDDEN, f"{principal} is not allowed here")
        return principal


def bind_auth_policies(app: App, settings: ServerSettings) -> None:
    """Give every ``TokenAuth`` of ``app``'s routes the server's secret (at start)."""
    for route in app.routes.values():
        policy = getattr(route, "auth", None)
        if isinstance(policy, TokenAuth):
            policy.bind(settings)
