"""`wire.dumps`: the bytes that go upstream, as Python's encoder writes them (orjson writes them
where it writes the same)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from claude_bridge.proxy.core.errors import InvalidRequest
from claude_bridge.proxy.core.wire import dumps

REQUESTS = Path(__file__).parent / "data" / "requests"


def _python(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@pytest.mark.parametrize("path", sorted(REQUESTS.glob("*.openai.json")), ids=lambda p: p.name)
def test_upstream_bodies_are_written_as_pythons_encoder_writes_them(path: Path) -> None:
    body = json.loads(path.read_text())
    assert dumps(body) == _python(body)


@pytest.mark.parametrize(
    "body",
    [
        {"n": 2**64, "m": -(2**63) - 1},  # past orjson's integers
        {"t": 'caf\u00e9 \u2028 \x00 \x1f "quoted" \\ /', "none": None, "f": [0.5, -0.0]},
        {"keys": {1: "one"}},  # not a string: Python's encoder makes it one
    ],
)
def test_what_orjson_refuses_or_might_change_is_written_by_python(body: dict[str, Any]) -> None:
    assert dumps(body) == _python(body)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_numbers_json_cannot_carry_are_refused(number: float) -> None:
    with pytest.raises(InvalidRequest, match="NaN or Infinity"):
        dumps({"temperature": number})


def test_lone_surrogates_become_replacement_characters() -> None:
    assert dumps({"t": "cut \ud83d"}) == '{"t":"cut \ufffd"}'.encode()


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "null"}], "tools": [{"x": (1.5, float("inf"))}]},
        # Too many short values to walk: the output is searched for `null` instead.
        {"messages": [{"content": "m"}] * 2_000 + [{"content": None, "n": float("nan")}]},
    ],
    ids=["nested", "past-the-walk"],
)
def test_numbers_json_cannot_carry_are_refused_wherever_they_are(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match="NaN or Infinity"):
        dumps(body)


def test_bodies_with_nulls_past_the_walk_are_written_as_pythons_encoder_writes_them() -> None:
    body = {"messages": [{"content": None, "n": 0.1}] * 2_000}
    assert dumps(body) == _python(body)
