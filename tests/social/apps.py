"""Apps with the people routes for the tests, and the credentials they take: tokens
signed with a test secret (``xstream_server.identity``)."""

from __future__ import annotations

from typing import Final

from xstream_server import App, TokenAuth
from xstream_server.identity import issue_token
from xstream_server.social import PeopleService, install

__all__ = ["SECRET", "app", "bearer", "make_app"]

SECRET: Final = "people-tests-secret-" + "0" * 32


def bearer(name: str, ttl: float = 3600, now: float | None = None) -> str:
    return f"Bearer {issue_token(SECRET, name, ttl, now=now)}"


def make_app() -> tuple[App, PeopleService]:
    app = App()
    people = install(app, TokenAuth(SECRET), min_buffer=1024, max_buffer=256 * 1024)
    return app, people


# For servers run as processes (``--app tests.social.apps:app``).
app, _people = make_app()
