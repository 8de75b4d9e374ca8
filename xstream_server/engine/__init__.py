"""The stream engine: everything the server does with requests and streams, for every
transport. It owns durability, hashing, checkpoints, leases and completion; a transport only
reads, writes, pauses and closes its connection.

The API a transport drives (``Engine`` in ``api.py``; ``StreamEngine`` implements it):

* ``handle_request(request) -> Response`` answers an ordinary request (app routes and the
  built-in ``/stream-status``).
* ``open_stream(request, client, offset=None) -> Accepted | Refused`` negotiates a window of
  a stream: a new one (no key) or a resume, taking the stream over from an older connection
  here or in another instance. ``offset`` is for protocols where the client states where
  its bytes start (a tus PATCH): anything but the durable offset is refused with 409.
  ``Accepted`` carries the durable offset, the window W and the buffer size; its
  ``session`` holds the stream's lease.
* ``receive(accepted, reading) -> RawWindow`` receives exactly W bytes: ``buffer()`` and
  ``received(n)`` for a transport that reads into memory it is given (zero copies),
  ``await write(data)`` for one that is handed bytes. The window pauses and resumes the
  transport's reading through ``reading`` (a ``ReadControl``), ends by itself when the
  bytes are in or storage fails, and is ended early by ``stop(status, message)`` (timeout,
  shutdown; takeovers call it too), ``body_ended()`` (the sender has no more bytes for
  it: an HTTP body shorter than the window) or ``client_gone()``. With a ``PartCheck``
  (``receive(accepted, reading, check)``, a tus ``Upload-Checksum``) the window's bytes
  count only once they match it: a mismatch cuts them off and answers 460; its expected
  digest may be a future settled after the bytes (an HTTP trailer).
  ``await result()`` is the completion to send, or None when nobody is left to answer.
  ``receive(..., transport="tcp")`` names the transport for the metrics (``metrics.py``):
  the window counts as an active stream and its bytes as received on it.
* A window of W = 0 (the stream is complete, or finalized before a crash) has no
  ``RawWindow``: ``await accepted.session.finish()`` is its completion.
* ``create_stream(request, client, length_deferred=False)`` creates a stream without a
  window (tus creation; with a deferred length, ``set_length(key, total)`` says it later,
  and ``open_stream(..., at_most=n)`` keeps each window to the bytes the client has;
  ``partial=True`` makes a part of a tus concatenation, and ``concatenate(request,
  client, keys)`` a stream of the parts put end to end, at once when they are complete,
  else when the last of them completes);
  ``status(key, authorization)`` is its durable state; ``read(key, offset)`` yields its
  durable bytes (downloads); ``terminate(key, authorization)`` deletes it (tus
  termination), stopping a window still open on it first.
* ``open_download(pull, client) -> Download | Refused`` answers a pull (§5): the route's
  content hook names the content; ``open_content(key, offset, live=..., principal=...,
  readers=...)`` serves a stored stream directly (a route or service may call it). A
  ``Download`` gives its durable bytes with ``await read(size)`` (``b""`` at the end);
  a *live* one serves a stream still being uploaded, waiting for each checkpoint (a
  relay). ``cancel()`` ends it from outside; ``close()`` when done.

How a new transport plugs in: byte-stream transports (TCP, WebSocket and uTP) reuse
``transport.driver.ConnectionDriver``, which runs the sans-IO protocol core against
this API and only needs a ``Channel`` (write, pause/resume reading, close). A transport
with a protocol of its own (HTTP/tus) calls the API above directly.

Modules: ``outcomes`` (the data objects above), ``errors`` (error → status, new keys),
``session`` (one window's durable writer and checkpoints), ``hashing`` (the sha256 that
trails the writer in a thread of its own), ``window`` (receiving W bytes),
``negotiation`` (new/resume, leases and takeover, grants and the accept hook),
``registry`` (live sessions, promised space, cached hashes), ``completion`` (verify,
finalize, handler, result), ``dispatch`` (request routes, ``/stream-status``),
``download`` (serving durable bytes, live relays), ``access`` (the principal rule),
``maintenance`` (takeover requests, lease renewal, start-up reconcile, the sweeper),
``engine`` (``StreamEngine``, which ties them together).
"""

from .access import may_access
from .api import Engine
from .dispatch import STATUS_ROUTE
from .download import Download, DownloadFailed
from .engine import StreamEngine
from .errors import new_key, status_of_error
from .outcomes import Accepted, Completion, Refused, Response, StreamStatus, completion_of
from .session import StreamSession
from .window import SETTLING, STORAGE, PartCheck, RawWindow, ReadControl

__all__ = [
    "SETTLING",
    "STATUS_ROUTE",
    "STORAGE",
    "Accepted",
    "Completion",
    "Download",
    "DownloadFailed",
    "Engine",
    "PartCheck",
    "RawWindow",
    "ReadControl",
    "Refused",
    "Response",
    "StreamEngine",
    "StreamSession",
    "StreamStatus",
    "completion_of",
    "may_access",
    "new_key",
    "status_of_error",
]
