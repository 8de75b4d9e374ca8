"""Files between people (PROTOCOL §7, §8): presence, monitors with notifications, and
send-to-user with accept/deny, live relay and store-and-forward.

Ordinary routes of an ``App``, written against the framework's public API; the default
application installs them with ``install(app, auth)``:

* ``service``: ``PeopleService``, the shared service (store, wake-ups, monitor holds, purges);
* ``presence``: ``/presence/register``, ``/presence/list``, ``/presence/lookup``;
* ``monitor``: ``/monitor``, ``/monitor/ack``;
* ``send``: ``/send`` (stream), ``/send/accept``, ``/send/deny``, ``/send/done``,
  ``/send/refuse``.
"""

from __future__ import annotations

from typing import Any

from ..app import App, AuthPolicy
from ..identity import TokenAuth
from .monitor import MonitorFeed, add_monitor_routes
from .presence import add_presence_routes
from .send import SEND_ROUTE, add_send_routes
from .service import PeopleService, require_principal

__all__ = ["SEND_ROUTE", "MonitorFeed", "PeopleService", "install"]


def install(app: App, auth: AuthPolicy | None = None, **send_stream: Any) -> PeopleService:
    """Add the people routes to ``app``; every one requires a principal from ``auth``
    (default: the server's signed tokens, ``TokenAuth``). ``send_stream`` are options of
    the ``/send`` stream route (``max_size``, buffers...)."""
    auth = auth or TokenAuth(required=True)
    people = PeopleService(auth)
    policy = require_principal(auth)
    add_presence_routes(app, people, policy)
    add_monitor_routes(app, people, policy)
    add_send_routes(app, people, policy, **send_stream)
    app.on_start.append(people.start)
    app.on_stop.append(people.stop)
    return people
