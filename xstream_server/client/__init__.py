"""Asyncio client for x-stream servers: requests, and uploads that resume on their own.

    from xstream_server.client import connect, upload

    async with connect("127.0.0.1:7070") as conn:
        reply = await conn.request("/echo", json={"hello": "world"})

    result = await upload("big.iso", server="127.0.0.1:7070", on_progress=print)
    done = await download(result.key, "copy.iso", server="127.0.0.1:7070")

Scripts without an event loop use ``upload_sync`` and ``download_sync``.
"""

from .connection import (
    DEFAULT_PORT,
    ClientConnection,
    ClientResponse,
    ConnectionLostError,
    PullGrant,
    StreamGrant,
    connect,
    parse_address,
)
from .download import DownloadResult, download, download_sync, partial_path
from .errors import (
    AuthenticationError,
    ChecksumMismatchError,
    ClientError,
    ConnectionFailedError,
    IntegrityError,
    NotResumableError,
    RequestError,
    RetryableServerError,
    ServerError,
    ServerProtocolError,
    StreamConflictError,
    StreamGoneError,
    UploadAborted,
    UploadClosed,
    UploadInterrupted,
    XStreamError,
    error_for_status,
)
from .progress import Progress, ProgressCallback, ProgressFeed
from .sources import UploadSource
from .upload import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_ROUTE,
    DEFAULT_SERVER,
    RetryPolicy,
    Upload,
    UploadResult,
    upload,
    upload_sync,
)

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_PORT",
    "DEFAULT_ROUTE",
    "DEFAULT_SERVER",
    "AuthenticationError",
    "ChecksumMismatchError",
    "ClientConnection",
    "ClientError",
    "ClientResponse",
    "ConnectionFailedError",
    "ConnectionLostError",
    "DownloadResult",
    "IntegrityError",
    "NotResumableError",
    "Progress",
    "ProgressCallback",
    "ProgressFeed",
    "PullGrant",
    "RequestError",
    "RetryPolicy",
    "RetryableServerError",
    "ServerError",
    "ServerProtocolError",
    "StreamConflictError",
    "StreamGoneError",
    "StreamGrant",
    "Upload",
    "UploadAborted",
    "UploadClosed",
    "UploadInterrupted",
    "UploadResult",
    "UploadSource",
    "XStreamError",
    "connect",
    "download",
    "download_sync",
    "error_for_status",
    "parse_address",
    "partial_path",
    "upload",
    "upload_sync",
]
