"""uTP (BEP 29, the uTorrent Transport Protocol) with LEDBAT congestion control.

``packets`` and ``connection`` are the sans-IO core (no sockets, no clock, no asyncio);
``socket`` is the asyncio adapter: one UDP socket carrying many connections.
"""

from .connection import ConnectionState, UtpConnection, UtpSettings
from .packets import Packet, PacketError, PacketType, decode_packet, seq_distance

__all__ = [
    "ConnectionState",
    "Packet",
    "PacketError",
    "PacketType",
    "UtpConnection",
    "UtpSettings",
    "decode_packet",
    "seq_distance",
]
