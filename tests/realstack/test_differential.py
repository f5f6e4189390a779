"""Differential: the same Anthropic requests through claude-bridge -> llama-server's chat
completions, and straight to llama-server's own native `/v1/messages`.

Both answers must be accepted by the `anthropic` SDK (it parses them into its typed models)
and have the same structure: block types, tool names and inputs, stop reason, usage present.
Wording is never compared. Greedy decoding keeps Gemma's answers comparable (temperature 0, sent
as an extra field: this SDK no longer takes sampling parameters); the scripted model is
deterministic by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import pytest

from .conftest import GEMMA, SCRIPTED, Bridge
from .scripted_model import TOOL_COMMAND, TOOL_MARKER, TOOL_TRIGGER

pytestmark = pytest.mark.realstack

BASH_TOOL: dict[str, Any] = {
    "name": "Bash",
    "description": "Run a shell command and return its output.",
    "input_schema": {
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The command to run."},
            "description": {"type": "string", "description": "What it does, in a few words."},
        },
        "required": ["command"],
    },
}
TOOL_USE_ID = "toolu_01RealstackDifferential"
Clients = dict[str, dict[str, anthropic.Anthropic]]


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    params: dict[str, Any]


CASES = [
    Case(
        "text",
        GEMMA,
        {
            "max_tokens": 16,
            "extra_body": {"temperature": 0},
            "messages": [{"role": "user", "content": "The capital of France is"}],
        },
    ),
    Case(
        "system-and-blocks",
        GEMMA,
        {
            "max_tokens": 12,
            "extra_body": {"temperature": 0},
            "system": [{"type": "text", "text": "You answer in one short sentence."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "Another one."},
            ],
        },
    ),
    Case(
        "plain-text-scripted",
        SCRIPTED,
        {
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Say hello."}],
        },
    ),
    Case(
        "tool-call",
        SCRIPTED,
        {
            "max_tokens": 256,
            "tools": [BASH_TOOL],
            "messages": [{"role": "user", "content": f"Run the marker command ({TOOL_TRIGGER})."}],
        },
    ),
    Case(
        "tool-result",
        SCRIPTED,
        {
            "max_tokens": 64,
            "tools": [BASH_TOOL],
            "messages": [
                {"role": "user", "content": f"Run the marker command ({TOOL_TRIGGER})."},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": TOOL_USE_ID,
                            "name": "Bash",
                            "input": {"command": TOOL_COMMAND},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": TOOL_USE_ID, "content": TOOL_MARKER},
                    ],
                },
            ],
        },
    ),
]


def shape(message: anthropic.types.Message) -> dict[str, Any]:
    """What must agree between the two paths (whitespace-only text blocks aside)."""
    blocks = [
        block for block in message.content if not (block.type == "text" and not block.text.strip())
    ]
    return {
        "type": message.type,
        "role": message.role,
        "blocks": [block.type for block in blocks],
        "tools": [(b.name, b.input) for b in blocks if b.type == "tool_use"],
        "stop_reason": message.stop_reason,
        "usage": message.usage.input_tokens > 0 and message.usage.output_tokens > 0,
    }


@pytest.fixture(scope="module")
def sdk(gemma_bridge: Bridge, scripted_bridge: Bridge) -> Iterator[Clients]:
    """model -> {"claude-bridge": client, "llama-server": client}, closed at the end."""
    clients: Clients = {}
    for model, bridge in ((GEMMA, gemma_bridge), (SCRIPTED, scripted_bridge)):
        clients[model] = {
            path: anthropic.Anthropic(
                base_url=url, api_key="sk-ant-realstack", max_retries=0, timeout=180
            )
            for path, url in (("claude-bridge", bridge.url), ("llama-server", bridge.upstream))
        }
    yield clients
    for pair in clients.values():
        for client in pair.values():
            client.close()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_same_structure(case: Case, sdk: Clients) -> None:
    answers = {
        path: client.messages.create(model=case.model, **case.params)
        for path, client in sdk[case.model].items()
    }
    shapes = {path: shape(message) for path, message in answers.items()}
    assert shapes["claude-bridge"] == shapes["llama-server"], answers
    assert shapes["claude-bridge"]["usage"], answers
    if case.name == "tool-call":
        assert shapes["claude-bridge"]["tools"] == [("Bash", {"command": TOOL_COMMAND})]
        assert shapes["claude-bridge"]["stop_reason"] == "tool_use"


def _events(stream: Any) -> list[str]:
    """Event types in order, runs of the same type collapsed (chunking may differ)."""
    kinds: list[str] = []
    for event in stream:
        if event.type not in kinds[-1:] and event.type != "ping":
            kinds.append(event.type)
    return kinds


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_same_structure_streaming(case: Case, sdk: Clients) -> None:
    finals: dict[str, anthropic.types.Message] = {}
    events: dict[str, list[str]] = {}
    for path, client in sdk[case.model].items():
        with client.messages.stream(model=case.model, **case.params) as stream:
            events[path] = _events(stream)
            finals[path] = stream.get_final_message()
    assert shape(finals["claude-bridge"]) == shape(finals["llama-server"]), finals
    assert events["claude-bridge"][0] == "message_start", events
    assert events["claude-bridge"][-1] == "message_stop", events
    assert "error" not in events["claude-bridge"], events


def test_count_tokens_both_ways(sdk: Clients) -> None:
    case = CASES[3]
    params = {k: v for k, v in case.params.items() if k in {"messages", "tools", "system"}}
    counts = {
        path: client.messages.count_tokens(model=case.model, **params).input_tokens
        for path, client in sdk[case.model].items()
    }
    assert all(isinstance(n, int) and n > 0 for n in counts.values()), counts
