"""Stream keys: server-made, URL-safe, at least 128 random bits, and safe on a command line."""

from __future__ import annotations

import re

from xstream_server.engine import new_key


def test_keys_are_url_safe_random_and_never_look_like_an_option() -> None:
    keys = [new_key() for _ in range(5000)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert re.fullmatch(r"[A-Za-z0-9_-]{24}", key)  # 24 base64 characters = 144 bits
        assert not key.startswith("-")
