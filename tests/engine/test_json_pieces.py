"""loads_in_pieces is json.loads: the same value, the same error (message and position),
for documents small and large enough to be decoded in several pieces. Pure, no I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xstream_server.engine import json_pieces
from xstream_server.engine.json_pieces import loads_in_pieces

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(), inner, max_size=6),
    max_leaves=40,
)


def outcome(decode: Any, text: str | bytes) -> tuple[str, Any]:
    try:
        value = decode(text)
    except json.JSONDecodeError as exc:
        return "JSONDecodeError", (exc.msg, exc.pos)
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)
    return "value", json.dumps(value)  # NaN == NaN, key order, -0.0 vs 0.0 all compared


def same(text: str | bytes) -> None:
    assert outcome(loads_in_pieces, text) == outcome(json.loads, text), text[:200]


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of a few characters, so that small documents are cut into many."""
    monkeypatch.setattr(json_pieces, "_BATCH", 3)


@given(documents, st.sampled_from([None, 0, 2]), st.sampled_from([",", ", ", " ,\n\t\r "]))
@settings(max_examples=300)
def test_generated_documents_decode_as_json_loads_does(
    document: Any, indent: int | None, separator: str
) -> None:
    text = json.dumps(document, indent=indent, separators=(separator, ":"))
    same(text)
    same(text.encode())
    same(text.encode("utf-16"))
    same(f" \r\n\t{text}\n ")


@given(documents)
@settings(max_examples=100)
def test_generated_documents_cut_into_many_pieces(document: Any) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json_pieces, "_BATCH", 2)
        for container in ([document] * 5, {str(i): document for i in range(5)}):
            text = json.dumps(container)
            same(text)
            # Every prefix is invalid (or a shorter valid document): the same error.
            for end in range(0, len(text), max(1, len(text) // 40)):
                same(text[:end])


CASES = [
    "[]",
    "{}",
    " [ ] ",
    "\t{\n}\r",
    "[1]",
    '{"a":1}',
    "[1,2,3]",
    '{"a":1,"b":[2,{}]}',
    '{"a":1,"a":2,"b":3}',
    "[NaN, Infinity, -Infinity, -0.0, 1e400]",
    '["a,b", "],[", "\\"", {"x": ",{"}, [",\\"["]]',
    "[[[[[]]]]]",
    "1",
    "-2.5",
    '"text"',
    "null",
    "true",
    " 7 ",
    # invalid
    "",
    " ",
    "[",
    "{",
    "]",
    "[1",
    "[1,",
    "[1,]",
    "[1 ,  ]",
    "[,1]",
    "[1 2]",
    "[1]x",
    "[1] [2]",
    '{"a"',
    '{"a":',
    '{"a":1',
    '{"a":1,',
    '{"a":1,}',
    '{"a":1 , }',
    "{a:1}",
    '{"a" 1}',
    '{"a":1 "b":2}',
    "{,}",
    '{"a":1}}',
    "[1]]",
    "[01]",
    "[1.]",
    "[tru]",
    '["\x01"]',
    '["abc',
    '{"ab',
    "[\u00a0]",
    "\u00a0[]",
    "[1]\u00a0",
    "\ufeff[]",
    "[\v1]",
    "[\f]",
    "[" * 100000 + "]" * 100000,
]


@pytest.mark.parametrize("text", CASES, ids=range(len(CASES)))
def test_cases_decode_as_json_loads_does(text: str, small_pieces: None) -> None:
    same(text)
    same(text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("data", [b"\xef\xbb\xbf[1]", b"[\xff]", b"\xff\xfe[\x00]\x00", b""])
def test_bytes_decode_as_json_loads_does(data: bytes) -> None:
    same(data)


def test_a_big_array_is_decoded_in_pieces_the_same() -> None:
    items = [{"id": i, "name": "a,b" * (i % 3), "tags": [i, {"k": ",{"}]} for i in range(30000)]
    text = json.dumps(items)
    assert len(text) > 20 * json_pieces._BATCH
    assert loads_in_pieces(text) == items
    members = {f"k{i}": item for i, item in enumerate(items)}
    assert loads_in_pieces(json.dumps(members)) == members
    broken = text[: len(text) // 2] + "}" + text[len(text) // 2 :]
    same(broken)
