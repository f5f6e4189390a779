"""Claude Code's session and agent ids kept with every exchange (events, JSON logs, journal,
`replay list --session`), and the session turned into OpenAI's `prompt_cache_key` so one
conversation's turns find their cached prefix. Real servers, the real SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from conftest import CLIENT_KEY, bridge_settings, make_client, start_bridge
from typer.testing import CliRunner
from upstream import FakeUpstream, JSONReply, completion

from claude_bridge.cli.main import app as cli
from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.core import providers
from claude_bridge.proxy.core.request import RequestOptions, translate_request
from claude_bridge.proxy.events import Bus, Exchange
from claude_bridge.proxy.journal.reader import load
from claude_bridge.proxy.journal.writer import Recorder
from claude_bridge.proxy.logs import exchange_record
from claude_bridge.proxy.models.anthropic import MessagesRequest

SESSION = "5b0c4a3e-8f1d-4c2b-9a7e-1f2e3d4c5b6a"
AGENT = "agent-7f3a"
USER_ID = json.dumps({"device_id": "ab" * 32, "account_uuid": "", "session_id": SESSION})
HI: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Hi"}]


def request(**more: Any) -> MessagesRequest:
    body = {"model": "claude-opus-4-6", "max_tokens": 8, "messages": HI, **more}
    return MessagesRequest.model_validate(body)


def test_the_session_is_openais_prompt_cache_key_and_nobody_elses() -> None:
    claude_code = request(metadata={"user_id": USER_ID})
    openai = RequestOptions(model="gpt-5", profile=providers.PROFILES["openai"])
    key = translate_request(claude_code, openai).body["prompt_cache_key"]
    assert len(key) == 32 and SESSION not in key
    # Stable across the turns of one conversation; another conversation gets another key.
    assert translate_request(claude_code, openai).body["prompt_cache_key"] == key
    other = json.dumps({"device_id": "ab" * 32, "account_uuid": "", "session_id": "x" * 36})
    assert (
        translate_request(request(metadata={"user_id": other}), openai).body["prompt_cache_key"]
        != key
    )
    generic = RequestOptions(model="qwen3")
    assert "prompt_cache_key" not in translate_request(claude_code, generic).body
    assert "prompt_cache_key" not in translate_request(request(), openai).body


@pytest.fixture
def recorded(upstream: FakeUpstream, tmp_path: Path) -> Iterator[tuple[Path, list[Exchange]]]:
    """A recording bridge (provider `openai`) whose finished exchanges are collected."""
    settings = bridge_settings(
        upstream.base_url, provider="openai", record_dir=str(tmp_path), auth_token=CLIENT_KEY
    )
    finished: list[Exchange] = []
    bus = Bus()
    bus.subscribe(lambda kind, exchange: finished.append(exchange) if kind == "finish" else None)
    recorder = Recorder.from_settings(settings)
    bridge = start_bridge(settings, create_app(settings, bus=bus, recorder=recorder))
    upstream.always(JSONReply(completion("ok")))
    try:
        with make_client(bridge) as sdk:
            headers = {"x-claude-code-session-id": SESSION, "x-claude-code-agent-id": AGENT}
            sdk.messages.create(
                model="claude-haiku-4-5",
                max_tokens=8,
                messages=HI,
                metadata={"user_id": USER_ID},
                extra_headers=headers,
            )
            sdk.messages.create(model="claude-opus-4-6", max_tokens=8, messages=HI)
    finally:
        bridge.stop()
    yield recorder.path, finished


def test_session_and_agent_ids_are_kept_everywhere(
    recorded: tuple[Path, list[Exchange]], upstream: FakeUpstream
) -> None:
    path, finished = recorded
    subagent, main = finished
    assert (subagent.session_id, subagent.agent_id) == (SESSION, AGENT)
    assert (main.session_id, main.agent_id) == (None, None)
    line = exchange_record("finish", subagent)
    assert (line["session_id"], line["agent_id"]) == (SESSION, AGENT)
    assert line["routed_by"] == "haiku tier: small_model"
    records = load(path).records
    newest = records[0] if records[0].session_id else records[1]
    assert (newest.session_id, newest.agent_id) == (SESSION, AGENT)
    assert newest.routing.routed_by == "haiku tier: small_model"
    assert "prompt_cache_key" in upstream.requests[0].json


def test_replay_list_filters_by_session(recorded: tuple[Path, list[Exchange]]) -> None:
    path, _ = recorded
    result = CliRunner().invoke(
        cli, ["replay", "list", str(path), "--json", "--session", SESSION[:8]]
    )
    assert result.exit_code == 0, result.output
    (listed,) = json.loads(result.stdout)
    assert (listed["session_id"], listed["agent_id"]) == (SESSION, AGENT)
    none = CliRunner().invoke(cli, ["replay", "list", str(path), "--json", "--session", "ffff"])
    assert json.loads(none.stdout) == []
