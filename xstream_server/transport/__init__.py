"""Transports: thin I/O drivers around the sans-IO protocol core (TCP today)."""

from .tcp import PacketProtocol, TcpTransportServer

__all__ = ["PacketProtocol", "TcpTransportServer"]
