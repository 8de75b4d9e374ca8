"""Limits every connection of every transport shares: how many connections one address may
hold open, and how much unparsed packet input all connections together may hold.

Each connection already holds at most one packet of input before its reading pauses; the
budget bounds the sum, so that thousands of clients each sending most of a large packet
cannot take the machine's memory. A connection whose input would pass the budget is
answered 503 and closed; its neighbours are not disturbed.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["SharedLimits"]


class SharedLimits:
    def __init__(self, max_connections_per_address: int, input_budget: int) -> None:
        self.max_connections_per_address = max_connections_per_address
        self.input_budget = input_budget
        self.input_bytes = 0
        self._connections: Counter[str] = Counter()

    def admit(self, address: str) -> bool:
        """Count a new connection from ``address``; False (not counted) past the limit."""
        if self._connections[address] >= self.max_connections_per_address:
            return False
        self._connections[address] += 1
        return True

    def release(self, address: str) -> None:
        self._connections[address] -= 1
        if self._connections[address] <= 0:
            del self._connections[address]
