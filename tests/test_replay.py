"""Record a real session through the official SDK, then browse it (`replay list/show`), re-run it
offline (`replay diff`), re-send it (`replay send`) and serve its upstream answers again
(`serve --upstream-replay`): the same client output with no upstream and no key.

The session (`STEPS`): text, a tool call, a streamed answer after a tool result, a streamed tool
call, an image (elided in the journal), an upstream 429, a request refused as invalid, and a
stream the upstream cuts off.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import typer
from conftest import (
    BIG_MODEL,
    CLIENT_KEY,
    SMALL_MODEL,
    UPSTREAM_KEY,
    Bridge,
    bridge_settings,
    start_bridge,
)
from typer.testing import CliRunner
from upstream import (
    DONE,
    FakeUpstream,
    JSONReply,
    RecordedRequest,
    Reply,
    SSEReply,
    chunk,
    completion,
    error_body,
    openai_usage,
    rate_limited,
    text_stream,
    tool_call,
)

from claude_bridge.cli.commands import record_options
from claude_bridge.cli.commands import replay as replay_cli
from claude_bridge.cli.commands.record_options import Recording
from claude_bridge.cli.main import guarded
from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import Settings, load_settings
from claude_bridge.proxy.core import request as request_core
from claude_bridge.proxy.core import response as response_core
from claude_bridge.proxy.core import source as source_core
from claude_bridge.proxy.journal.reader import JournalError, load
from claude_bridge.proxy.journal.records import (
    ELIDED_PREFIX,
    REDACTED,
    Record,
    chunk_data,
    encode_chunk,
)
from claude_bridge.proxy.journal.writer import Recorder
from claude_bridge.proxy.replay import ReplayTransport, canonical_upstream, diff_record, request_key

MODEL = "claude-sonnet-4-6"
HAIKU = "claude-haiku-4-5"
HI = [{"role": "user", "content": "Hi"}]
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
IMAGE = base64.b64encode(bytes(range(256)) * 12).decode()
ASK = {"role": "user", "content": "Weather in Paris?"}
CALLED = {
    "role": "assistant",
    "content": [
        {"type": "tool_use", "id": "call_w1", "name": "get_weather", "input": {"city": "Paris"}}
    ],
}
RESULT = {
    "role": "user",
    "content": [{"type": "tool_result", "tool_use_id": "call_w1", "content": "18°C, sunny"}],
}


# -- the session ---------------------------------------------------------------------------


def _normalized(value: Any) -> Any:
    """Message and request ids are new on every run: everything else must be identical."""
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    if isinstance(value, str) and value.startswith(("msg_01", "req_01")):
        return value[:4] + "*"
    return value


def _error(exc: anthropic.APIStatusError) -> Any:
    return {"error": type(exc).__name__, "status": exc.status_code, "body": _normalized(exc.body)}


def _message(client: anthropic.Anthropic, model: str = MODEL, **params: Any) -> Any:
    try:
        message = client.messages.create(model=model, max_tokens=100, **params)
    except anthropic.APIStatusError as exc:
        return _error(exc)
    return _normalized(message.model_dump())


def _stream(client: anthropic.Anthropic, **params: Any) -> Any:
    events: list[Any] = []
    try:
        with client.messages.stream(model=MODEL, max_tokens=100, **params) as stream:
            events.extend(_normalized(event.model_dump()) for event in stream)
    except anthropic.APIStatusError as exc:
        events.append(_error(exc))
    return events


def _tool_stream() -> list[str]:
    first = {"index": 0, "id": "call_t2", "type": "function"}
    return [
        chunk({"role": "assistant", "content": "Checking."}),
        chunk({"tool_calls": [{**first, "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        chunk(finish_reason="tool_calls"),
        chunk(usage=openai_usage(30, 9), choices=False),
        DONE,
    ]


Step = tuple[Reply | None, Callable[[anthropic.Anthropic], Any]]
STEPS: list[Step] = [
    (JSONReply(completion("Hello! How can I help?")), lambda c: _message(c, messages=HI)),
    (
        JSONReply(
            completion(
                None,
                tool_calls=[tool_call("call_w1", "get_weather", {"city": "Paris"})],
                finish_reason="tool_calls",
            )
        ),
        lambda c: _message(c, messages=[ASK], tools=[WEATHER]),
    ),
    (
        SSEReply(text_stream(["It is 18°C ", "and sunny in Paris."])),
        lambda c: _stream(c, messages=[ASK, CALLED, RESULT], tools=[WEATHER]),
    ),
    (SSEReply(_tool_stream()), lambda c: _stream(c, messages=[ASK], tools=[WEATHER])),
    (
        JSONReply(completion("A test pattern.")),
        lambda c: _message(
            c,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": IMAGE},
                        },
                        {"type": "text", "text": "What is this?"},
                    ],
                }
            ],
        ),
    ),
    (
        rate_limited("3", code="rate_limit_exceeded"),
        lambda c: _message(c, model=HAIKU, messages=HI),
    ),
    (None, lambda c: _message(c, messages=[{"role": "user", "content": [{"type": "bogus"}]}])),
    (
        SSEReply(
            [chunk({"role": "assistant", "content": ""}), chunk({"content": "Parti"})], end="close"
        ),
        lambda c: _stream(c, messages=[{"role": "user", "content": "Tell me a story"}]),
    ),
    (
        JSONReply(
            error_body(
                "This model's maximum context length is 8192 tokens. However, your messages "
                "resulted in 9000 tokens.",
                "invalid_request_error",
                "context_length_exceeded",
            ),
            status=400,
        ),
        lambda c: _stream(c, messages=[{"role": "user", "content": "Again?"}]),
    ),
]


def run_session(client: anthropic.Anthropic, upstream: FakeUpstream | None) -> list[Any]:
    outputs = []
    for reply, step in STEPS:
        if upstream is not None and reply is not None:
            upstream.reply(reply)
        outputs.append(step(client))
    return outputs


# -- servers -------------------------------------------------------------------------------


def sdk(bridge: Bridge) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=bridge.url, api_key=CLIENT_KEY, max_retries=0, timeout=20)


def recording_bridge(settings: Settings, **options: Any) -> tuple[Bridge, Recorder]:
    recorder = Recorder.from_settings(settings)
    return start_bridge(settings, create_app(settings, recorder=recorder, **options)), recorder


def assert_no_key(directory: Path) -> None:
    """Every file written anywhere under `directory`: no key in any form."""
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for key in (UPSTREAM_KEY, CLIENT_KEY):
            assert key.encode() not in data, path
            assert base64.b64encode(key.encode()) not in data, path


@dataclass
class Recorded:
    directory: Path
    path: Path
    outputs: list[Any]
    records: list[Record]
    """Oldest first, one per step."""


@pytest.fixture(scope="module")
def recorded(upstream_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    upstream_server.reset()
    directory = tmp_path_factory.mktemp("recorded")
    settings = bridge_settings(upstream_server.base_url, record_dir=str(directory / "journal"))
    bridge, recorder = recording_bridge(settings)
    try:
        with sdk(bridge) as client:
            outputs = run_session(client, upstream_server)
    finally:
        bridge.stop()
        upstream_server.reset()
    records = load(recorder.path).records[::-1]
    return Recorded(directory, recorder.path, outputs, records)


# -- recording -----------------------------------------------------------------------------


def test_the_session_is_recorded_one_record_per_exchange(recorded: Recorded) -> None:
    records = recorded.records
    assert len(records) == len(STEPS)
    text, tool, streamed, stream_tool, image, limited, invalid, cut, too_long = records
    assert [r.status for r in records] == [200, 200, 200, 200, 200, 429, 400, 200, 400]
    assert [r.state for r in records] == ["complete"] * 9
    assert [r.routing.stream for r in records] == [
        False,
        False,
        True,
        True,
        False,
        False,
        False,
        True,
        True,
    ]
    assert (
        text.routing.upstream_model == BIG_MODEL and limited.routing.upstream_model == SMALL_MODEL
    )
    assert text.reply and text.reply.body["content"] == [
        {"type": "text", "text": "Hello! How can I help?"}
    ]
    assert text.routing.message_id == text.reply.body["id"]
    assert tool.usage.stop_reason == "tool_use" and stream_tool.usage.stop_reason == "tool_use"
    # Streams: the raw upstream chunks with offsets, the client's events in order.
    for record in (streamed, stream_tool):
        assert record.upstream and record.upstream.response and record.upstream.response.chunks
        assert record.upstream.complete
        offsets = [offset for offset, _ in record.upstream.response.chunks]
        assert offsets == sorted(offsets)
        assert record.reply and record.reply.events
        types = [event["type"] for _, event in record.reply.events]
        assert types[0] == "message_start" and types[-1] == "message_stop"
        t = record.timings
        assert t.upstream_first_byte_ms is not None and t.end_ms is not None
        assert t.client_first_byte_ms is not None and t.client_first_byte_ms <= t.end_ms
    assert streamed.reply and streamed.reply.events
    # The image is elided in the client body and the upstream request alike.
    assert image.elided == 2
    assert image.client.body["messages"][0]["content"][0]["source"]["data"].startswith(
        ELIDED_PREFIX
    )
    assert image.upstream and ELIDED_PREFIX in json.dumps(image.upstream.request.body)
    assert IMAGE not in recorded.path.read_text()
    # The upstream's refusal, as it came; the client's error, as it went.
    assert limited.upstream and limited.upstream.response
    assert limited.upstream.response.status == 429
    assert limited.upstream.response.headers["retry-after"] == "3"
    assert limited.error and limited.error.type == "rate_limit_error"
    assert limited.reply and limited.reply.body["error"]["type"] == "rate_limit_error"
    assert (
        invalid.upstream is None and invalid.error and invalid.error.type == "invalid_request_error"
    )
    # The cut stream: what arrived, the transport error, an `error` event to the client.
    assert cut.upstream and cut.upstream.error and not cut.upstream.complete
    assert cut.reply and cut.reply.events and cut.reply.events[-1][1]["type"] == "error"
    assert recorded.outputs[7][-1]["body"]["error"]["type"] == "api_error"
    # A stream refused upstream before it began: a plain error answer, not an event stream.
    assert too_long.upstream and too_long.upstream.response
    assert too_long.upstream.response.status == 400
    assert too_long.upstream.response.chunks is None
    assert too_long.reply and too_long.reply.body["error"] == {
        "type": "invalid_request_error",
        "message": "prompt is too long: 9000 tokens > 8192 maximum",
    }
    assert recorded.outputs[8] == [
        {
            "error": "BadRequestError",
            "status": 400,
            "body": too_long.reply.body | {"request_id": "req_*"},
        }
    ]


def test_no_written_file_holds_a_key(recorded: Recorded) -> None:
    assert_no_key(recorded.directory)
    for record in recorded.records:
        sent = [record.client.headers.get(h) for h in ("authorization", "x-api-key")]
        assert REDACTED in sent and set(sent) <= {REDACTED, None}
        if record.upstream is not None:
            assert record.upstream.request.headers["authorization"] == REDACTED


# -- replay list / show --------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """The `replay` commands in process, with an isolated home and no real keys in sight."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "CLAUDE_BRIDGE_", "ANTHROPIC_")) or name in (
            "BIG_MODEL",
            "SMALL_MODEL",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CLAUDE_BRIDGE_HOME", str(tmp_path / "home"))
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """claude-bridge (test)"""

    replay_cli.register(app, guarded)
    runner = CliRunner()

    def invoke(*args: str, **env: str) -> Any:
        return runner.invoke(app, ["replay", *args], env={"NO_COLOR": "1", "COLUMNS": "200", **env})

    return invoke


def test_list_is_newest_first_with_filters_and_json(
    recorded: Recorded, cli: Callable[..., Any]
) -> None:
    result = cli("list", str(recorded.path))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("01")]
    assert [line.split()[0] for line in lines] == [r.id for r in recorded.records[::-1]]
    assert "claude-haiku-4-5 → small-model" in result.output
    assert "Weather in Paris?" in result.output

    two = cli("list", str(recorded.path), "-n", "2", "--json")
    summaries = json.loads(two.output)
    assert [s["id"] for s in summaries] == [r.id for r in recorded.records[::-1][:2]]
    assert summaries[0]["prompt"] == "Again?" and summaries[0]["stream"] is True

    def ids(*args: str) -> list[str]:
        return [
            s["id"] for s in json.loads(cli("list", str(recorded.path), "--json", *args).output)
        ]

    assert ids("--model", "haiku") == [recorded.records[5].id]
    assert ids("--status", "4xx") == [recorded.records[i].id for i in (8, 6, 5)]
    assert ids("--status", "429") == [recorded.records[5].id]
    assert ids("-q", "PARIS") == [r.id for r in recorded.records[1:4][::-1]]
    empty = cli("list", str(recorded.path), "--model", "nothing-like-it")
    assert empty.exit_code == 0 and "no recorded exchanges match" in empty.output


def copy_home(recorded: Recorded, tmp_path: Path) -> None:
    """The recorded session in the `cli` fixture's default journal directory."""
    home = tmp_path / "home" / "journal"
    home.mkdir(parents=True)
    (home / recorded.path.name).write_bytes(recorded.path.read_bytes())


def test_list_reads_the_default_directory(
    recorded: Recorded, cli: Callable[..., Any], tmp_path: Path
) -> None:
    copy_home(recorded, tmp_path)
    result = cli("list", "--json")
    assert len(json.loads(result.output)) == len(STEPS)


def test_show_pretty_and_raw(recorded: Recorded, cli: Callable[..., Any]) -> None:
    record = recorded.records[3]  # the streamed tool call
    result = cli("show", record.id[:14].lower(), "--journal", str(recorded.path))
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in (
        record.id,
        record.request_id,
        f"{MODEL} → {BIG_MODEL}",
        "client request: POST /v1/messages",
        "upstream request: POST",
        "/chat/completions",
        "upstream response: 200",
        "content_block_start",
        "message_stop",
        "Oslo",
        "upstream first byte",
        "authorization: [redacted]",
    ):
        assert expected in out, expected
    raw = cli("show", record.request_id, "--journal", str(recorded.path), "--raw")
    assert json.loads(raw.output) == record.model_dump(mode="json")
    missing = cli("show", "01NOPE", "--journal", str(recorded.path))
    assert missing.exit_code == 1 and "no recorded exchange '01NOPE'" in missing.output
    # The provider profile by its name, not as every one of its rules.
    assert "provider=generic" in out and "reasoning_drops" not in out
    # The end of the request id, as the dashboard shows it.
    by_end = cli("show", record.request_id[-6:], "--journal", str(recorded.path))
    assert by_end.exit_code == 0 and record.id in by_end.output


# -- replay diff ---------------------------------------------------------------------------


def test_diff_is_clean_on_the_same_code(recorded: Recorded, cli: Callable[..., Any]) -> None:
    for record in recorded.records:
        result = diff_record(record)
        assert not result.differs, (
            result.request.unified(record.id),
            result.reply.unified(record.id),
        )
        assert result.request.outcome == "same"
        assert result.reply.outcome == "same", result.reply.note
    done = cli("diff", str(recorded.path))
    assert done.exit_code == 0, done.output
    assert f"{len(STEPS)} exchanges: 0 differ, {len(STEPS)} same" in done.output


def test_diff_shows_a_changed_request_translation(
    recorded: Recorded, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = request_core._system_messages

    def changed(request: Any, dropped: list[str]) -> list[dict[str, Any]]:
        return [{"role": "system", "content": "Be brief."}, *original(request, dropped)]

    monkeypatch.setattr(request_core, "_system_messages", changed)
    result = cli("diff", str(recorded.path))
    assert result.exit_code == 1, result.output
    added = [line for line in result.output.splitlines() if line.startswith("+ ")]
    assert '+      "content": "Be brief.",' in added
    assert "upstream request (current code)" in result.output
    assert (
        f"{len(STEPS)} exchanges: {len(STEPS) - 1} differ, 1 same" in result.output
    )  # not the 400
    one = diff_record(recorded.records[0])
    assert one.request.outcome == "differs" and one.reply.outcome == "same"


def test_diff_shows_a_changed_reply_translation(
    recorded: Recorded, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = response_core.anthropic_usage

    def changed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        usage = original(*args, **kwargs)
        return {**usage, "output_tokens": usage["output_tokens"] + 1000}

    monkeypatch.setattr(response_core, "anthropic_usage", changed)
    monkeypatch.setattr(source_core, "anthropic_usage", changed)  # streams end there
    results = {r.id: diff_record(r) for r in recorded.records}
    replies = [results[r.id].reply.outcome for r in recorded.records]
    # Successful answers change; errors and the cut stream carry no usage.
    assert replies == [
        "differs",
        "differs",
        "differs",
        "differs",
        "differs",
        "same",
        "same",
        "same",
        "same",
    ]
    assert all(results[r.id].request.outcome == "same" for r in recorded.records)
    diff = "\n".join(results[recorded.records[2].id].reply.unified("x"))
    assert "reply (recorded)" in diff and '"output_tokens":1' in diff
    assert cli("diff", recorded.records[0].id, "--journal", str(recorded.path)).exit_code == 1


# -- replay send ---------------------------------------------------------------------------


def _answer(request: RecordedRequest) -> Reply:
    if request.json.get("stream"):
        return SSEReply(text_stream(["replayed"]))
    return JSONReply(completion("replayed"))


def test_send_in_process_to_the_test_upstream(
    recorded: Recorded, cli: Callable[..., Any], upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.always(_answer)
    env = {
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "BIG_MODEL": BIG_MODEL,
        "SMALL_MODEL": SMALL_MODEL,
    }
    result = cli("send", str(recorded.path), **env)
    # The 429 is a 200 now: a different status is exit code 1.
    assert result.exit_code == 1, result.output
    assert "200 (was 429)" in result.output
    assert "200 (was 400)" in result.output
    # The image's elided stand-in is not base64: the bridge refuses it.
    assert "400 (was 200)" in result.output and "invalid base64 data" in result.output
    assert "sent 9: 6 same status, 3 different, 0 failed" in result.output
    assert "elided when recorded" in result.output
    # The upstream got what was recorded, in order (the invalid requests never went there).
    expected = [
        canonical_upstream(r.upstream.request.body)
        for r in recorded.records
        if r.upstream and not r.elided
    ]
    assert [canonical_upstream(r.json) for r in upstream.requests] == expected
    replays = load(tmp_path / "home" / "journal").records[::-1]
    assert [r.replayed_from for r in replays] == [r.id for r in recorded.records]
    assert all(r.id > recorded.records[-1].id for r in replays)
    assert_no_key(tmp_path / "home")


def test_send_to_a_running_bridge_records_it_there(
    recorded: Recorded, cli: Callable[..., Any], upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.always(_answer)
    settings = bridge_settings(
        upstream.base_url, record_dir=str(tmp_path / "there"), auth_token="bridge-token"
    )
    bridge, recorder = recording_bridge(settings)
    try:
        picked = recorded.records[2]
        result = cli(
            "send",
            picked.id,
            "--journal",
            str(recorded.path),
            "--to",
            bridge.url,
            "--api-key",
            "bridge-token",
        )
        assert result.exit_code == 0, result.output
        assert "sent 1: 1 same status, 0 different, 0 failed" in result.output
        refused = cli("send", picked.id, "--journal", str(recorded.path), "--to", bridge.url)
        assert refused.exit_code == 1 and "401 (was 200)" in refused.output
        dead = cli("send", picked.id, "--journal", str(recorded.path), "--to", "http://127.0.0.1:9")
        assert dead.exit_code == 1 and "0 different, 1 failed" in dead.output
    finally:
        bridge.stop()
    there = load(recorder.path).records
    assert [r.replayed_from for r in there] == [picked.id, picked.id]
    assert [r.status for r in there] == [401, 200]
    assert not (tmp_path / "home").exists()  # --to: nothing recorded on this side


def test_send_does_not_send_replays_again_and_list_marks_them(
    recorded: Recorded, cli: Callable[..., Any], tmp_path: Path
) -> None:
    copy_home(recorded, tmp_path)
    offline = ("--upstream-replay", str(recorded.path))
    first = cli("send", *offline)
    assert f"sent {len(STEPS)}:" in first.output, first.output
    # The replays were recorded next to the originals; the next run sends the originals only.
    second = cli("send", *offline)
    assert f"{len(STEPS)} recorded replay(s) not sent again" in second.output
    assert f"sent {len(STEPS)}:" in second.output
    listed = cli("list", "-n", "0")
    assert listed.output.count("[replay]") == 2 * len(STEPS), listed.output
    everything = cli("send", "--include-replays", "-n", "1", *offline)
    assert "not sent again" not in everything.output and "sent 1:" in everything.output


# -- serve --upstream-replay ---------------------------------------------------------------


def test_upstream_replay_serves_the_whole_session_with_no_upstream_and_no_key(
    recorded: Recorded, upstream: FakeUpstream, tmp_path: Path
) -> None:
    # The same upstream URL as recorded (it is in error messages), but nothing is sent there.
    settings = bridge_settings(
        upstream.base_url, openai_api_key=None, record_dir=str(tmp_path / "again")
    )
    replay = ReplayTransport(load(recorded.path).records)
    bridge, recorder = recording_bridge(settings, transport=replay)
    try:
        with sdk(bridge) as client:
            outputs = run_session(client, None)
    finally:
        bridge.stop()
    assert outputs == recorded.outputs
    assert upstream.requests == []
    assert replay.hits == len(STEPS) - 1 and replay.misses == 0
    # Re-recorded from the replay: what the client got is the same again.
    again = load(recorder.path).records[::-1]
    for first, second in zip(recorded.records, again, strict=True):
        assert (first.reply is None) == (second.reply is None)
        if first.reply and second.reply:
            assert _normalized(_events(first)) == _normalized(_events(second))


def _events(record: Record) -> Any:
    assert record.reply is not None
    if record.reply.events is None:
        return record.reply.body
    return [event for _, event in record.reply.events if event["type"] != "ping"]


def test_an_unrecorded_request_is_a_clear_miss_or_forwarded(
    recorded: Recorded, upstream: FakeUpstream
) -> None:
    settings = bridge_settings("http://127.0.0.1:9/v1", big_model=None)
    bridge = start_bridge(
        settings, create_app(settings, transport=ReplayTransport(recorded.records))
    )
    try:
        with sdk(bridge) as client:
            missed = _message(client, messages=[{"role": "user", "content": "never asked"}])
            streamed_miss = _stream(client, messages=[{"role": "user", "content": "never asked"}])
            other_model = _message(client, model="some-other-model", messages=HI)
    finally:
        bridge.stop()
    assert missed["status"] == 404
    assert "no recorded answer matches this request" in missed["body"]["error"]["message"]
    # A stream that misses is refused before it starts, like any upstream error.
    assert streamed_miss[-1]["status"] == 404
    # Routed differently from the recording: the miss says so.
    assert "the recording for big-model, small-model" in other_model["body"]["error"]["message"]

    upstream.reply(JSONReply(completion("from the live upstream")))
    settings = bridge_settings(upstream.base_url)
    forward = ReplayTransport(recorded.records, miss="forward", forward=httpx.AsyncHTTPTransport())
    bridge = start_bridge(settings, create_app(settings, transport=forward))
    try:
        with sdk(bridge) as client:
            live = _message(client, messages=[{"role": "user", "content": "never asked"}])
            hit = _message(client, messages=HI)
    finally:
        bridge.stop()
    assert live["content"][0]["text"] == "from the live upstream"
    assert hit == recorded.outputs[0]
    assert len(upstream.requests) == 1


def test_replay_timing_keeps_the_recorded_delays(recorded: Recorded) -> None:
    record = recorded.records[3]
    assert record.upstream and record.upstream.response and record.upstream.response.chunks
    slept: list[float] = []
    now = [0.0]

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async def fetch(timing: bool) -> bytes:
        transport = ReplayTransport([record], timing=timing, sleep=sleep, clock=lambda: now[0])
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.post(
                "http://u/v1/chat/completions", json=record.upstream.request.body
            )  # type: ignore[union-attr]
            return await response.aread()

    body = asyncio.run(fetch(timing=True))
    sent = record.upstream.sent_ms or 0.0
    assert record.upstream.response_ms is not None
    assert slept[0] == pytest.approx((record.upstream.response_ms - sent) / 1000)
    assert now[0] == pytest.approx((record.upstream.response.chunks[-1][0] - sent) / 1000)
    slept.clear()
    assert asyncio.run(fetch(timing=False)) == body and slept == []


def test_the_replay_key_ignores_what_changes_between_runs() -> None:
    def body(user: str, call_id: str, image: str) -> dict[str, Any]:
        return {
            "model": "m",
            "user": user,
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": call_id, "type": "function"}],
                },
                {"role": "tool", "tool_call_id": call_id, "content": "ok"},
            ],
        }

    url = f"data:image/png;base64,{IMAGE}"
    elided = canonical_upstream(body("a", "x", url))["messages"][0]["content"][0]["image_url"][
        "url"
    ]
    assert request_key(body("session-1", "toolu_abc", url)) == request_key(
        json.dumps(body("session-2", "toolu_def", elided)).encode()
    )
    assert request_key(body("s", "x", url)) != request_key({**body("s", "x", url), "model": "n"})


# -- shutdown ------------------------------------------------------------------------------


def test_a_stream_in_flight_at_shutdown_is_written_incomplete(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.reply(
        SSEReply([chunk({"role": "assistant", "content": "Still thinking"})], end="stall")
    )
    settings = bridge_settings(upstream.base_url, record_dir=str(tmp_path))
    recorder = Recorder.from_settings(settings)
    bridge = start_bridge(settings, create_app(settings, recorder=recorder), graceful=0.1)
    first_event = threading.Event()

    def read() -> None:
        body = {"model": MODEL, "max_tokens": 50, "messages": HI, "stream": True}
        with (
            httpx.Client(timeout=20) as http,
            http.stream("POST", bridge.url + "/v1/messages", json=body) as response,
        ):
            try:
                for line in response.iter_lines():
                    if "Still thinking" in line:
                        first_event.set()
            except httpx.HTTPError:
                pass  # the server went away: expected

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert first_event.wait(10)
    finally:
        bridge.stop()
        reader.join(10)
    (record,) = load(recorder.path).records
    assert record.state == "incomplete"
    assert record.reply and record.reply.events
    assert record.reply.events[-1][1]["type"] != "message_stop"
    assert record.upstream and not record.upstream.complete


# -- retries and encodings -----------------------------------------------------------------


def test_retried_upstream_tries_are_kept_and_replayed(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.reply(
        JSONReply(error_body("busy", "server_error"), status=503),
        JSONReply(completion("Second time lucky.")),
    )
    settings = bridge_settings(
        upstream.base_url, record_dir=str(tmp_path), retries=2, retry_backoff=0.001
    )
    bridge, recorder = recording_bridge(settings)
    try:
        with sdk(bridge) as client:
            first = _message(client, messages=HI)
    finally:
        bridge.stop()
    assert first["content"][0]["text"] == "Second time lucky."
    (record,) = load(recorder.path).records
    assert record.upstream and record.upstream.response
    assert record.upstream.response.status == 200
    assert len(record.upstream.retries) == 1 and "answered 503" in record.upstream.retries[0]
    assert not diff_record(record).differs
    replayed = bridge_settings(upstream.base_url, openai_api_key=None)
    bridge = start_bridge(replayed, create_app(replayed, transport=ReplayTransport([record])))
    try:
        with sdk(bridge) as client:
            assert _message(client, messages=HI) == first
    finally:
        bridge.stop()
    assert len(upstream.requests) == 2  # both from the recording run


def test_a_gzipped_event_stream_is_replayed_and_rerun_decoded(recorded: Recorded) -> None:
    plain = recorded.records[2]
    assert plain.upstream and plain.upstream.response and plain.upstream.response.chunks
    raw = b"".join(chunk_data(c) for c in plain.upstream.response.chunks)
    packed = gzip.compress(raw)
    zipped = plain.model_copy(deep=True)
    assert zipped.upstream and zipped.upstream.response
    zipped.upstream.response.headers["content-encoding"] = "gzip"
    zipped.upstream.response.chunks = [
        encode_chunk(1.0, packed[:20]),
        encode_chunk(2.0, packed[20:]),
    ]
    assert isinstance(zipped.upstream.response.chunks[0][1], dict)  # bytes, kept as base64
    assert not diff_record(zipped).differs

    async def fetch() -> bytes:
        transport = ReplayTransport([zipped])
        async with httpx.AsyncClient(transport=transport) as client:
            body = zipped.upstream.request.body  # type: ignore[union-attr]
            response = await client.post("http://u/v1/chat/completions", json=body)
            return await response.aread()

    assert asyncio.run(fetch()) == raw


# -- serve's options -----------------------------------------------------------------------


def test_serve_options_build_the_recorder_and_the_replay(
    recorded: Recorded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The options declared on a command as `serve` declares them, and what they build."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLAUDE_BRIDGE_HOME", str(tmp_path / "home"))
    built: list[Recording] = []
    app = typer.Typer()

    @app.command()
    def serve_like(
        record: bool = record_options.RECORD_OPTION,
        record_dir: Path = record_options.RECORD_DIR_OPTION,
        record_full: bool = record_options.RECORD_FULL_OPTION,
        upstream_replay: Path = record_options.UPSTREAM_REPLAY_OPTION,
        replay_miss: record_options.ReplayMiss = record_options.REPLAY_MISS_OPTION,
        replay_timing: bool = record_options.REPLAY_TIMING_OPTION,
    ) -> None:
        flags = record_options.record_flags(record, record_dir, record_full)
        settings = load_settings(flags=flags, env=dict(os.environ), dotenv_path=None)
        built.append(
            record_options.recording(
                settings,
                upstream_replay=upstream_replay,
                replay_miss=replay_miss,
                replay_timing=replay_timing,
            )
        )

    runner = CliRunner()
    assert runner.invoke(app, []).exit_code == 0
    assert built[-1].recorder is None and built[-1].transport is None

    assert runner.invoke(app, ["--record", "--record-full"]).exit_code == 0
    recorder = built[-1].recorder
    assert recorder is not None and recorder.full
    assert recorder.path.parent == tmp_path / "home" / "journal"

    args = ["--record-dir", str(tmp_path / "elsewhere"), "--upstream-replay", str(recorded.path)]
    result = runner.invoke(app, [*args, "--replay-miss", "forward", "--replay-timing"])
    assert result.exit_code == 0, result.output
    wiring = built[-1]
    assert wiring.recorder is not None and wiring.recorder.path.parent == tmp_path / "elsewhere"
    assert isinstance(wiring.transport, ReplayTransport)
    assert wiring.transport.miss == "forward" and wiring.transport.timing
    assert wiring.transport.size == len(STEPS) - 1
    lines = wiring.describe()
    assert f"upstream replay: {len(STEPS) - 1} recorded answers from {recorded.path}" in lines[0]
    assert "for big-model, small-model (on a miss: forward)" in lines[0]
    assert lines[1] == f"recording to {wiring.recorder.path}"

    assert runner.invoke(app, ["--no-record"], env={"CLAUDE_BRIDGE_RECORD": "1"}).exit_code == 0
    assert built[-1].recorder is None
    missing = runner.invoke(app, ["--upstream-replay", str(tmp_path / "none.jsonl")])
    assert isinstance(missing.exception, JournalError)
    # Each recorder opened its journal at start-up (the writability check): close them.
    for wiring in built:
        if wiring.recorder is not None:
            wiring.recorder.close()
