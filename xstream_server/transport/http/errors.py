"""From engine statuses to HTTP: the status code, and an ``application/problem+json`` body
(RFC 9457) carrying the engine's message."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus

from starlette.responses import Response

from ...protocol import Status

__all__ = ["PROBLEM_TYPE", "http_status", "problem"]

PROBLEM_TYPE = "application/problem+json"


def http_status(status: Status | int, success: int = 200) -> int:
    """Status numbers are HTTP's own (PROTOCOL §4); ``0`` becomes what the method needs."""
    return success if status == Status.OK else int(status)


def problem(
    status: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    problem_type: str | None = None,
) -> Response:
    body: dict[str, str | int] = {"status": status, "title": _title(status), "detail": message}
    if problem_type is not None:
        body["type"] = problem_type
    return Response(
        json.dumps(body).encode(),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_TYPE,
    )


def _title(status: int) -> str:
    try:
        return Status(status).phrase
    except ValueError:
        try:
            return HTTPStatus(status).phrase.lower()
        except ValueError:
            return "error"
