"""Fixtures of the fleet tests (the others come from ``tests/conftest.py``)."""

from tests.durability.conftest import connect

__all__ = ["connect"]
