"""Apps with the people routes for the tests, and the credentials they take.

Until signed tokens exist a small test policy stands in: ``Bearer @name`` is ``@name``;
``Bearer bad`` (or anything else that is not a principal) is refused with 401."""

from __future__ import annotations

from xstream_server import App, RouteError, Status
from xstream_server.social import People, install

__all__ = ["app", "bearer", "make_app", "test_policy"]


def bearer(name: str) -> str:
    return f"Bearer {name}"


async def test_policy(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, name = authorization.partition(" ")
    if scheme != "Bearer" or not name.startswith("@"):
        raise RouteError(Status.UNAUTHORIZED, "bad credential")
    return name


def make_app() -> tuple[App, People]:
    app = App()
    people = install(app, test_policy, min_buffer=1024, max_buffer=256 * 1024)
    return app, people


# For servers run as processes (``--app tests.social.apps:app``).
app, _people = make_app()
