"""`claude-bridge translate` prints exactly what `serve` sends and answers.

Each recorded exchange in tests/data/exchanges (`<dialect>_<case>.request.json`, the client's
Messages body; `<dialect>_<case>.upstream.json` or `.sse`, the upstream's answer) goes through a
real `serve` (uvicorn on loopback, in front of the scripted upstream of tests/upstream.py) and
through the `translate` command with the same settings: the upstream body must be the one the
upstream received, and the translated answer the one the client got, ids aside (message ids
are random). The dialect is the case name's first word: Chat Completions (`openai`), the
Responses API, and pass-through (`anthropic`), each as JSON and as a stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    BIG_MODEL,
    SMALL_MODEL,
    UPSTREAM_KEY,
    Bridge,
    bridge_settings,
    make_http,
    start_bridge,
)
from test_cli import assert_ok, home, invoke  # noqa: F401  (home: the CLI's isolated home)
from test_replay import recording_bridge
from upstream import FakeUpstream, JSONReply, SSEReply

from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.core.sse import SSEDecoder
from claude_bridge.proxy.journal.reader import load
from claude_bridge.proxy.replay import ReplayTransport, diff_record

DATA = Path(__file__).parent / "data" / "exchanges"
CASES = sorted(p.name.removesuffix(".request.json") for p in DATA.glob("*.request.json"))
PATHS = {
    "openai": "/v1/chat/completions",
    "responses": "/v1/responses",
    "anthropic": "/v1/messages",
}
JSON = {"content-type": "application/json"}
_MESSAGE_ID = re.compile(r"msg_[0-9A-Za-z]{8,}")


def _answer(case: str) -> Path:
    (found,) = DATA.glob(f"{case}.upstream.*")
    return found


def _scripted(answer: Path) -> JSONReply | SSEReply:
    text = answer.read_text(encoding="utf-8")
    if answer.suffix == ".sse":  # one event a chunk, as an upstream sends them
        return SSEReply([event + "\n\n" for event in text.split("\n\n") if event])
    return JSONReply(json.loads(text))


def _normalized(value: Any) -> Any:
    """`value` with each message id numbered in order of appearance."""
    ids: dict[str, str] = {}
    text = json.dumps(value, sort_keys=True)
    text = _MESSAGE_ID.sub(lambda m: ids.setdefault(m.group(), f"msg_#{len(ids)}"), text)
    return json.loads(text)


def _serve(bridge: Bridge, case: str) -> Any:
    """The client's answer to the case's request: the message, or the events."""
    with make_http(bridge) as http:
        served = http.post("/v1/messages", content=_request(case).read_bytes(), headers=JSON)
    assert served.status_code == 200, served.text
    is_stream = "text/event-stream" in served.headers["content-type"]
    return _events(served.content) if is_stream else served.json()


def _request(case: str) -> Path:
    return DATA / f"{case}.request.json"


def _events(body: bytes) -> list[dict[str, Any]]:
    """The Anthropic events of an SSE body; pings left out (timed ones depend on the clock)."""
    decoder = SSEDecoder()
    events = [json.loads(e.data) for e in decoder.decode(body) + decoder.flush()]
    return [e for e in events if e["type"] != "ping"]


def _config(path: Path, bridge: Bridge) -> Path:
    settings = bridge.settings
    lines = [
        f'openai_base_url = "{settings.openai_base_url}"',
        f'openai_api_key = "{UPSTREAM_KEY}"',
        f'big_model = "{BIG_MODEL}"',
        f'small_model = "{SMALL_MODEL}"',
        f'mode = "{settings.mode}"',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("case", CASES)
def test_translate_prints_what_serve_sends_and_answers(
    case: str,
    home: Path,  # noqa: F811
    tmp_path: Path,
    upstream: FakeUpstream,
    make_bridge: Callable[..., Bridge],
) -> None:
    dialect = case.split("_")[0]
    request, answer = _request(case), _answer(case)
    bridge = make_bridge(mode=dialect)
    upstream.reply(_scripted(answer))
    client = _serve(bridge, case)
    assert upstream.last.path == PATHS[dialect]
    config = _config(tmp_path / "config.toml", bridge)

    sent = invoke("translate", "--config", str(config), str(request))
    assert_ok(sent)
    assert json.loads(sent.stdout) == upstream.last.json

    stream = answer.suffix == ".sse"
    flag = "--stream" if stream else "--response"
    answered = invoke(
        "translate", "--config", str(config), flag, str(answer), "--request", str(request)
    )
    assert_ok(answered)
    if stream:
        offline: Any = _events(answered.stdout_bytes)
        if dialect != "anthropic":  # the estimate `serve` makes, not 0 (the old drift)
            assert offline[0]["message"]["usage"]["input_tokens"] > 0
    else:
        offline = json.loads(answered.stdout)
    assert _normalized(offline) == _normalized(client)


@pytest.mark.parametrize("case", CASES)
def test_every_dialect_is_recorded_diffed_and_replayed(
    case: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The journal says which dialect was spoken; `replay diff` re-plans the recording in it
    and finds nothing changed; `--upstream-replay` answers the same request from it."""
    dialect = case.split("_")[0]
    settings = bridge_settings(upstream.base_url, record_dir=str(tmp_path), mode=dialect)
    bridge, recorder = recording_bridge(settings)
    upstream.reply(_scripted(_answer(case)))
    try:
        client = _serve(bridge, case)
    finally:
        bridge.stop()
    (record,) = load(recorder.path).records
    assert record.routing.mode == dialect
    result = diff_record(record)
    assert (result.request.outcome, result.reply.outcome) == ("same", "same")

    offline = bridge_settings(upstream.base_url, openai_api_key=None, mode=dialect)
    replaying = start_bridge(offline, create_app(offline, transport=ReplayTransport([record])))
    try:
        assert _normalized(_serve(replaying, case)) == _normalized(client)
    finally:
        replaying.stop()
    assert len(upstream.requests) == 1  # the recording run's only


def test_translate_takes_an_upstream_and_a_dialect(home: Path, tmp_path: Path) -> None:  # noqa: F811
    """With no request to route, `--dialect` says what the reply is in; `--upstream` names a
    configured upstream, and an unknown one is one error line."""
    answer = _answer("responses_reasoning_call")
    result = invoke("translate", "--dialect", "responses", "--response", str(answer))
    assert_ok(result)
    message = json.loads(result.stdout)
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use"]
    assert message["usage"]["cache_read_input_tokens"] == 64

    missing = invoke("translate", "--upstream", "nope", "--response", str(answer))
    assert missing.exit_code == 1 and "no upstream named 'nope'" in missing.stderr
    wrong = invoke("translate", "--dialect", "grpc", "--response", str(answer))
    assert wrong.exit_code == 1 and "unknown mode 'grpc'" in wrong.stderr
