"""Server settings: command-line flags, ``XSTREAM_*`` environment variables, defaults.

Every knob has a default that works on one machine; durations are seconds, sizes bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServerSettings"]

MiB = 1024 * 1024


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XSTREAM_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=7070, ge=0, le=65535)
    # The HTTP face (tus, request routes), served beside TCP in the same process and loop.
    http: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=7080, ge=0, le=65535)
    # Origins a browser may upload from ("*": any), for CORS.
    http_cors_origins: tuple[str, ...] = ("*",)
    # The upload page at / on the HTTP port (the JS client stays at /web/xstream.js).
    http_page: bool = True
    # UDP port of the uTP transport (PROTOCOL §9); None: no uTP.
    utp_port: int | None = Field(default=None, ge=0, le=65535)
    data_dir: Path = Path("data")
    # None: start an embedded redis-server under data_dir.
    redis_url: str | None = None
    app: str = "handlers:app"
    # Processes serving the same ports (SO_REUSEPORT), sharing Redis and the data directory,
    # under a supervisor that restarts a crashed one (docs/OPERATING.md).
    workers: int = Field(default=1, ge=1, le=256)
    # Bind the TCP and HTTP ports with SO_REUSEPORT (set for workers by their supervisor).
    reuse_port: bool = False

    # Identities (PROTOCOL §6): the secret bearer tokens are signed with (at least 32
    # characters); None: a random one kept in <data_dir>/auth-secret, made on first use.
    auth_secret: SecretStr | None = None
    # Routes whose TokenAuth leaves it to the server (the default app's) refuse requests
    # without a token (401) when this is on; off, such requests are anonymous.
    auth_required: bool = False

    # Packet limits (PROTOCOL §1); a route may set its own payload limit.
    max_header_block: int = Field(default=16 * 1024, ge=256)
    max_headers: int = Field(default=64, ge=4)
    max_payload: int = Field(default=MiB, ge=0)

    # Timeouts (status 408).
    idle_timeout: float = Field(default=60.0, gt=0)
    raw_stall_timeout: float = Field(default=30.0, gt=0)
    # A packet (header block and payload) must be whole this long after its first byte;
    # a client dripping bytes does not reset it (as nginx's client_header/body_timeout).
    packet_timeout: float = Field(default=30.0, gt=0)

    # Durability (PROTOCOL §3.5). A checkpoint fsyncs the part file, then records the
    # offset in Redis. It happens at every window end and disconnect, and in between after
    # ``checkpoint_bytes`` or ``checkpoint_seconds``, whichever comes first.
    fsync: bool = True
    checkpoint_bytes: int = Field(default=64 * MiB, ge=MiB)
    checkpoint_seconds: float = Field(default=1.0, gt=0)

    # Free space never granted to a window: room for the server's own files (the embedded
    # Redis's append-only file among them). Windows are granted against free space less this
    # reserve less what earlier windows have yet to write.
    storage_reserve: int = Field(default=64 * MiB, ge=0)

    # Write raw bytes from the event loop into the page cache (fast); off: every write goes
    # through the I/O thread pool (for storage where a write can block long, e.g. NFS).
    inline_writes: bool = True

    # Ownership of a stream: a lease in Redis, renewed by the owner. A newer request for the
    # same key takes over at once when the owner is alive, and after at most
    # ``lease_seconds`` when the owner died.
    lease_seconds: float = Field(default=5.0, gt=0)
    takeover_timeout: float = Field(default=5.0, gt=0)

    # Expiry of incomplete streams (a route may set its own) and the sweeper's cadence.
    stream_expiry: float = Field(default=24 * 3600.0, gt=0)
    sweep_interval: float = Field(default=60.0, gt=0)
    # Part files younger than this are never taken for orphans (their record may be in flight).
    orphan_grace: float = Field(default=60.0, ge=0)

    # Streams open at once from one client (its principal, else its address): 429 beyond.
    max_streams_per_client: int = Field(default=1024, ge=1)
    # Connections open at once from one address, over every transport: refused beyond.
    max_connections_per_address: int = Field(default=10_000, ge=1)
    # Unparsed packet input all connections may hold together (each holds at most one
    # packet); a connection that would pass it is answered 503 and closed.
    input_budget: int = Field(default=256 * MiB, ge=MiB)

    # Threads for file I/O, hashing and fsync (blocking calls leave the event loop here).
    io_threads: int = Field(default=16, ge=2)

    # People (PROTOCOL §7, §8): a presence registration lasts this long after the last one;
    # notifications are kept until acknowledged or this old; a delivered send's content is
    # deleted this long after the receiver said it has everything.
    presence_expiry: float = Field(default=120.0, gt=0)
    notification_expiry: float = Field(default=7 * 24 * 3600.0, gt=0)
    send_keep: float = Field(default=24 * 3600.0, ge=0)

    # Lifecycle events appended to the Redis Stream ``xs:events`` (docs/EVENTS.md), capped
    # at about ``event_stream_length`` entries; off: only the app's on_event hooks get them.
    event_stream: bool = True
    event_stream_length: int = Field(default=100_000, ge=100)

    # Prometheus metrics at /metrics on the HTTP port (docs/OPERATING.md).
    metrics: bool = True

    shutdown_timeout: float = Field(default=10.0, gt=0)
    redis_timeout: float = Field(default=2.0, gt=0)
    log_level: str = "INFO"
    # "text": human-readable lines; "json": one JSON object per line (xstream_server/logs.py).
    log_format: Literal["text", "json"] = "text"

    @field_validator("auth_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("the auth secret must be at least 32 bytes long")
        return value
