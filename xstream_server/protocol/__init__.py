"""The sans-IO core of the x-stream protocol: packet codec and connection state machine.

Nothing in this package performs I/O or imports asyncio, redis or file APIs.
"""

from .codec import Limits, Packet, PacketDecoder, encode_packet, parse_header_block
from .connection import (
    NEED_DATA,
    PAUSED,
    Mode,
    ServerConnection,
    notification_headers,
    response_headers,
)
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import (
    ConnectionClosed,
    ContentSent,
    DataFormat,
    Event,
    InvalidRequest,
    PullRequest,
    Request,
    StreamRequest,
    WindowReceived,
    parse_request,
    parse_x_stream,
    parse_x_stream_pull,
)
from .status import Status

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "ConnectionClosed",
    "ContentSent",
    "DataFormat",
    "Event",
    "InvalidRequest",
    "Limits",
    "LocalProtocolError",
    "Mode",
    "Packet",
    "PacketDecoder",
    "ProtocolError",
    "PullRequest",
    "RemoteProtocolError",
    "Request",
    "ServerConnection",
    "Status",
    "StreamRequest",
    "WindowReceived",
    "encode_packet",
    "notification_headers",
    "parse_header_block",
    "parse_request",
    "parse_x_stream",
    "parse_x_stream_pull",
    "response_headers",
]
