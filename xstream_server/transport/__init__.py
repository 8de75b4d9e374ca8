"""Transports: thin I/O adapters over the stream engine. ``driver`` runs the packet protocol
over any byte stream; ``tcp`` gives it sockets."""

from .driver import Channel, ConnectionDriver, ConnectionHub
from .tcp import TcpConnection, TcpTransportServer

__all__ = ["Channel", "ConnectionDriver", "ConnectionHub", "TcpConnection", "TcpTransportServer"]
