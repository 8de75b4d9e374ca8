"""Fixtures of the metrics tests (the others come from ``tests/conftest.py``)."""

from tests.durability.conftest import connect

__all__ = ["connect"]
