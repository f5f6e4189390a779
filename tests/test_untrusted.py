"""`untrusted.loads`: upstream JSON read once into values every later step can handle. orjson
reads what it reads as Python's parser does; the rest takes Python's path, as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from claude_bridge.proxy.core import untrusted
from claude_bridge.proxy.core.sse import SSEDecoder

STREAMS = Path(__file__).parent / "data" / "stream"


def _data_fields() -> list[str]:
    decoder = SSEDecoder()
    fields: list[str] = []
    for path in sorted(STREAMS.glob("*.openai.sse")):
        fields += [event.data for event in decoder.decode(path.read_bytes()) + decoder.flush()]
    return [data for data in fields if data.startswith("{")]


def test_every_recorded_chunk_reads_as_pythons_parser_reads_it() -> None:
    fields = _data_fields()
    assert len(fields) > 200
    for data in fields:
        if "\\ud" in data.lower():  # lone surrogates are cleaned: their own test below
            continue
        for form in (data, data.encode()):
            value = untrusted.loads(form)
            assert repr(value) == repr(json.loads(data)), data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"n": 18446744073709551616}', {"n": 18446744073709551616}),  # past 64 bits: exact
        ('{"n": -9223372036854775809}', {"n": -9223372036854775809}),
        ('{"n": 18446744073709551615}', {"n": 18446744073709551615}),
        ('{"f": 1.5e-7, "g": 1e16}', {"f": 1.5e-7, "g": 1e16}),
        ('{"n": NaN, "i": -Infinity, "big": 1e999}', {"n": None, "i": None, "big": None}),
        ('{"t": "a\\ud800b", "\\udfff": 1}', {"t": "a\ufffdb", "\ufffd": 1}),
        ('\ufeff{"bom": true}', {"bom": True}),
        ('{"a": 1, "a": 2}', {"a": 2}),
    ],
)
def test_what_orjson_reads_otherwise_takes_pythons_path(text: str, expected: Any) -> None:
    for form in (text, text.encode()):
        assert repr(untrusted.loads(form)) == repr(expected)


def test_bad_utf8_is_replaced() -> None:
    assert untrusted.loads(b'{"t": "\xff ok"}') == {"t": "\ufffd ok"}


@pytest.mark.parametrize("depth", [untrusted.MAX_DEPTH + 1, 1_000, 100_000])
def test_deep_nesting_is_too_deep_on_either_path(depth: int) -> None:
    with pytest.raises(untrusted.TooDeep):
        untrusted.loads("[" * depth + "]" * depth)
    assert untrusted.loads("[" * untrusted.MAX_DEPTH + "]" * untrusted.MAX_DEPTH) is not None
