"""Who may use a stream (PROTOCOL §6): a stream records its principal, or none. One with a
principal is resumed, pulled and asked about only by that principal (or by those a route
names for a pull, §8); one without is anyone's who holds its key (the key is 144 random
bits, a capability)."""

from __future__ import annotations

from collections.abc import Collection

__all__ = ["may_access"]


def may_access(
    owner: str | None, principal: str | None, readers: Collection[str] | None = None
) -> bool:
    """Whether ``principal`` may use a stream of ``owner``; ``readers``, when given, are
    exactly the principals let in instead (a route's choice for a pull)."""
    if readers is not None:
        return principal is not None and principal in readers
    return owner is None or owner == principal
