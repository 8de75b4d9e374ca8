"""xstream: a resumable upload server framework.

Register routes on an ``App``; serve it with ``xstream-server --app module:attribute``; upload
with the client in ``xstream_server.client`` (re-exported here) or the ``xstream`` command.
"""

from .app import (
    App,
    CompletedUpload,
    ConfigurationError,
    CreateDecision,
    CreateOffer,
    Notification,
    NotificationFeed,
    PullContext,
    Reply,
    RequestContext,
    RouteError,
    Services,
    StreamContent,
    StreamOffer,
)
from .client import *  # noqa: F403
from .client import __all__ as _client_all
from .events import EventKind, StreamEvent
from .identity import TokenAuth
from .protocol import DataFormat, Status
from .settings import ServerSettings

__all__ = [
    "App",
    "CompletedUpload",
    "ConfigurationError",
    "CreateDecision",
    "CreateOffer",
    "DataFormat",
    "Notification",
    "NotificationFeed",
    "PullContext",
    "EventKind",
    "Reply",
    "RequestContext",
    "RouteError",
    "ServerSettings",
    "Services",
    "Status",
    "StreamContent",
    "StreamEvent",
    "StreamOffer",
    "TokenAuth",
    *_client_all,
]
