"""Decoding a big JSON document in pieces, so that a thread doing it lets others run.

``json.loads`` is C code that holds the GIL from the first byte to the last: 16 MiB of
small objects take about 0.3 s, during which the event loop cannot run even when the
decoding happens in a thread of its own. :func:`loads_in_pieces` gives the same result
and the same errors, but decodes a top-level array (or object) in pieces of about 64 KiB,
each a run of whole elements (members) decoded by ``json.loads``; where a piece cannot be
cut (a comma inside an element), element by element with the standard library's scanner.
Between two pieces Python bytecode runs, so the interpreter hands the GIL to other
threads every switch interval (5 ms by default). One element is still decoded in one
call: a document that is a single huge nested value, or a huge string, holds the GIL as
long as ``json.loads`` would. Scalars at the top level go to ``json.loads`` as they are.

Why a piece that decodes is a run of whole elements: the piece is the text from the start
of an element up to a comma, wrapped in brackets. A comma inside a string would leave that
string unterminated, one inside a nested value would leave it unclosed; either way the
piece fails to decode and is redone element by element.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, cast

__all__ = ["loads_in_pieces"]

# JSON's whitespace, and nothing else: it always matches, maybe nothing.
_space = cast(Callable[[str, int], "re.Match[str]"], re.compile(r"[ \t\n\r]*").match)
# A value at an index: (value, its end), or StopIteration(index) where none starts.
_scan = cast(Callable[[str, int], "tuple[Any, int]"], json.JSONDecoder().scan_once)  # type: ignore[attr-defined]


_loads = json.loads
# Pieces of about this many characters are decoded by one json.loads (~1 ms each).
_BATCH = 64 * 1024


def _cut(s: str, idx: int) -> int:
    """A comma at least _BATCH characters after ``idx`` that likely separates two
    elements (or members): one followed by the character the element at ``idx`` starts
    with, else any. Whether it does is known only once the piece before it decodes."""
    start = idx + _BATCH
    cut = s.find("," + s[idx : idx + 1], start, start + _BATCH)
    return s.find(",", start) if cut == -1 else cut


def _trailing_comma(probe: str, comma: int) -> str | None:
    """The message of this Python's json for a comma before ']' or '}', when it reports
    one at the comma itself (3.13 and later); None when it says "Expecting ..." further on."""
    try:
        json.loads(probe)
    except json.JSONDecodeError as exc:
        return exc.msg if exc.pos == comma else None
    raise AssertionError(f"json accepted {probe!r}")  # pragma: no cover


_array_comma = _trailing_comma("[0,]", 2)
_object_comma = _trailing_comma('{"a":0,}', 6)


def _comma_before(s: str, idx: int) -> int:
    """Where the comma is that only whitespace separates from ``idx``."""
    while s[idx - 1] in " \t\n\r":
        idx -= 1
    return idx - 1


def loads_in_pieces(document: bytes | str) -> Any:
    """Exactly ``json.loads(document)``: the same value, the same ``JSONDecodeError``
    (message and position) or ``UnicodeDecodeError`` for input it refuses. A top-level
    array or object is decoded element by element; anything else by ``json.loads``."""
    if isinstance(document, (bytes, bytearray)):
        s = document.decode(json.detect_encoding(document), "surrogatepass")
    else:
        s = document
        if s.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", s, 0)
    start = _space(s, 0).end()
    opening = s[start : start + 1]
    value: Any
    if opening == "[":
        value, end = _array(s, start + 1)
    elif opening == "{":
        value, end = _object(s, start + 1)
    else:
        return json.loads(s)
    end = _space(s, end).end()
    if end != len(s):
        raise json.JSONDecodeError("Extra data", s, end)
    return value


def _array(s: str, idx: int) -> tuple[list[Any], int]:
    """The array whose '[' is just before ``idx``, and the index after its ']'."""
    items: list[Any] = []
    append, space, scan = items.append, _space, _scan
    idx = space(s, idx).end()
    if s[idx : idx + 1] == "]":
        return items, idx + 1
    cut = -1  # element by element up to this comma
    while True:  # idx: where an element starts
        if idx > cut:
            cut = _cut(s, idx)
            if cut == -1:
                cut = len(s)
            else:
                try:
                    items += _loads("[" + s[idx:cut] + "]")
                except (ValueError, RecursionError):
                    pass  # cut inside an element (or bad input): one by one up to there
                else:
                    idx = space(s, cut + 1).end()
        try:
            value, idx = scan(s, idx)
        except StopIteration as exc:
            if items and _array_comma is not None and s[idx : idx + 1] == "]":
                raise json.JSONDecodeError(_array_comma, s, _comma_before(s, idx)) from None
            raise json.JSONDecodeError("Expecting value", s, exc.value) from None
        append(value)
        idx = space(s, idx).end()
        after = s[idx : idx + 1]
        if after == "]":
            return items, idx + 1
        if after != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", s, idx)
        idx = space(s, idx + 1).end()


def _object(s: str, idx: int) -> tuple[dict[str, Any], int]:
    """The object whose '{' is just before ``idx``, and the index after its '}'."""
    members: dict[str, Any] = {}
    space, scan = _space, _scan
    idx = space(s, idx).end()
    if s[idx : idx + 1] == "}":
        return members, idx + 1
    cut = -1  # member by member up to this comma
    while True:  # idx: where a member starts
        if idx > cut:
            cut = _cut(s, idx)
            if cut == -1:
                cut = len(s)
            else:
                try:
                    members.update(_loads("{" + s[idx:cut] + "}"))
                except (ValueError, RecursionError):
                    pass  # cut inside a member (or bad input): one by one up to there
                else:
                    idx = space(s, cut + 1).end()
        if s[idx : idx + 1] != '"':
            if members and _object_comma is not None and s[idx : idx + 1] == "}":
                raise json.JSONDecodeError(_object_comma, s, _comma_before(s, idx))
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", s, idx)
        key, idx = scan(s, idx)  # a string: its errors are json's own
        idx = space(s, idx).end()
        if s[idx : idx + 1] != ":":
            raise json.JSONDecodeError("Expecting ':' delimiter", s, idx)
        idx = space(s, idx + 1).end()
        try:
            members[key], idx = scan(s, idx)
        except StopIteration as exc:
            raise json.JSONDecodeError("Expecting value", s, exc.value) from None
        idx = space(s, idx).end()
        after = s[idx : idx + 1]
        if after == "}":
            return members, idx + 1
        if after != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", s, idx)
        idx = space(s, idx + 1).end()
