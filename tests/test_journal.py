"""The journal: record format (ids, redaction, elision, chunks), the writer, the reader, and the
frozen v1 journal that every later version must keep reading."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import CLIENT_KEY, UPSTREAM_KEY

from claude_bridge.proxy.config import Settings, load_settings
from claude_bridge.proxy.core.context import ReplyContext
from claude_bridge.proxy.core.request import RequestOptions
from claude_bridge.proxy.core.routing import Route
from claude_bridge.proxy.drain import Drain
from claude_bridge.proxy.events import Exchange
from claude_bridge.proxy.journal.reader import (
    JournalError,
    find,
    load,
    prompt_text,
    read_lines,
    select,
    status_matches,
)
from claude_bridge.proxy.journal.records import (
    ELIDED_PREFIX,
    FORMAT_VERSION,
    REDACTED,
    Record,
    chunk_data,
    elide_base64,
    encode_chunk,
    record_id,
    record_time,
    redact_headers,
    scrub,
)
from claude_bridge.proxy.journal.trace import Trace
from claude_bridge.proxy.journal.writer import Recorder, build_record, default_dir, setting_secrets
from claude_bridge.proxy.plan import Plan
from claude_bridge.proxy.replay import diff_record

FROZEN = Path(__file__).parent / "data" / "journal" / "v1-frozen.jsonl"
KEY = "sk-upstream-SECRET-0123456789"
IMAGE = base64.b64encode(bytes(range(256)) * 12).decode()  # 4096 base64 characters


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += ms / 1000


# -- records -------------------------------------------------------------------------------


def test_record_ids_sort_by_time_and_carry_it() -> None:
    early = record_id(1_700_000_000.123, b"\xff" * 10)
    late = record_id(1_700_000_000.124, b"\x00" * 10)
    assert len(early) == len(late) == 26
    assert early < late
    assert record_time(early) == pytest.approx(1_700_000_000.123)
    assert record_id(5.0) != record_id(5.0)


def test_secret_headers_are_redacted_and_repeats_joined() -> None:
    headers = [
        ("Authorization", "Bearer sk-1"),
        ("x-api-key", "sk-2"),
        ("api-key", "sk-3"),
        ("X-Custom-Token", "t"),
        ("accept", "a"),
        ("Accept", "b"),
    ]
    redacted = redact_headers(headers, ["x-custom-token"])
    assert redacted == {
        "authorization": REDACTED,
        "x-api-key": REDACTED,
        "api-key": REDACTED,
        "x-custom-token": REDACTED,
        "accept": "a, b",
    }


def test_scrub_replaces_secrets_raw_and_json_escaped() -> None:
    odd = 'pa"ss\\word'
    line = json.dumps({"a": f"key {KEY}!", "b": odd})
    scrubbed = scrub(line, [KEY, odd, "ab"])
    assert KEY not in scrubbed and 'pa\\"ss' not in scrubbed
    assert json.loads(scrubbed) == {"a": f"key {REDACTED}!", "b": REDACTED}


def test_long_base64_is_elided_deterministically_and_prose_is_kept() -> None:
    prose = "word " * 1000
    body = {
        "image": {"type": "base64", "media_type": "image/png", "data": IMAGE},
        "url": f"data:application/pdf;base64,{IMAGE}",
        "short": IMAGE[:100],
        "text": prose,
        "list": [IMAGE],
    }
    elided, count = elide_base64(body)
    assert count == 3
    assert elided["image"]["data"].startswith(ELIDED_PREFIX)
    assert "4096 chars" in elided["image"]["data"]
    assert elided["url"] == "data:application/pdf;base64," + elided["image"]["data"]
    assert elided["list"] == [elided["image"]["data"]]
    assert elided["short"] == IMAGE[:100] and elided["text"] == prose
    assert body["image"]["data"] == IMAGE  # the input is untouched
    assert elide_base64(elided) == (elided, 0)  # idempotent


def test_chunks_round_trip_even_split_inside_a_character() -> None:
    data = 'data: {"t":"héllo"}\n\n'.encode()
    cut = data.index("é".encode()) + 1
    for piece in (data[:cut], data[cut:], data):
        encoded = encode_chunk(1.5, piece)
        assert chunk_data(encoded) == piece
        record = Record.model_validate(json.loads(_line(chunks=[encoded])))
        assert record.upstream and record.upstream.response and record.upstream.response.chunks
        assert chunk_data(record.upstream.response.chunks[0]) == piece
    assert isinstance(encode_chunk(0, data[:cut])[1], dict)
    assert encode_chunk(0, data)[1] == data.decode()


def _record(chunks: list[Any] | None = None, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "id": record_id(1_700_000_000),
        "timings": {"started_at": 1_700_000_000},
        "upstream": {
            "request": {"url": "http://u/v1/chat/completions", "body": {"model": "m"}},
            "response": {"status": 200, "chunks": chunks},
        },
    }
    data.update(fields)
    return data


# -- reader --------------------------------------------------------------------------------


def _line(**fields: Any) -> str:
    return json.dumps(_record(**fields))


def test_a_cut_last_line_is_skipped_with_a_warning() -> None:
    first = _line(id=record_id(1.0))
    second = _line(id=record_id(2.0))
    journal = read_lines([first, second[: len(second) // 2]], "s.jsonl")
    assert [r.id for r in journal.records] == [json.loads(first)["id"]]
    assert journal.warnings and "line 2 is cut short" in journal.warnings[0]
    # A trailing newline after a complete last line is not a problem.
    assert read_lines([first, second, ""], "s.jsonl").warnings == []


def test_a_broken_line_in_the_middle_is_an_error_naming_it() -> None:
    with pytest.raises(JournalError, match=r"s\.jsonl:2: not a JSON record"):
        read_lines([_line(), "{oops", _line()], "s.jsonl")


def test_a_newer_format_is_refused_clearly() -> None:
    with pytest.raises(JournalError, match="newer than this claude-bridge reads"):
        read_lines([_line(v=FORMAT_VERSION + 1)], "s.jsonl")
    with pytest.raises(JournalError, match="no format version"):
        read_lines([json.dumps({"id": "x"})], "s.jsonl")


def test_load_merges_files_newest_first_and_find_takes_prefixes(tmp_path: Path) -> None:
    ids = [record_id(float(t), bytes([t]) * 10) for t in (1, 2, 3)]
    (tmp_path / "a.jsonl").write_text(_line(id=ids[0], request_id="req_a") + "\n")
    (tmp_path / "b.jsonl").write_text(
        _line(id=ids[2], request_id="req_c") + "\n" + _line(id=ids[1], request_id="req_b") + "\n"
    )
    journal = load(tmp_path)
    assert [r.id for r in journal.records] == ids[::-1]
    assert len(journal.files) == 2
    assert find(journal.records, ids[1]).request_id == "req_b"
    assert find(journal.records, "req_a").id == ids[0]
    assert find(journal.records, ids[2][:20].lower()).id == ids[2]
    with pytest.raises(JournalError, match="matches 3 exchanges"):
        find(journal.records, ids[0][:5])
    with pytest.raises(JournalError, match="no recorded exchange"):
        find(journal.records, "nope")
    with pytest.raises(JournalError, match="no such journal"):
        load(tmp_path / "missing")


def test_filters_by_model_status_and_text() -> None:
    def make(**fields: Any) -> Record:
        return Record.model_validate(_record(**fields))

    ok = make(
        status=200,
        routing={"client_model": "claude-haiku-4-5", "upstream_model": "small"},
        client={"body": {"messages": [{"role": "user", "content": "Weather in Paris?"}]}},
    )
    limited = make(status=429, error={"type": "rate_limit_error", "message": "slow down"})
    cut = make(status=200, state="incomplete")
    records = [ok, limited, cut]
    assert select(records, model="HAIKU") == [ok]
    assert select(records, model="small") == [ok]
    assert select(records, status="ok") == [ok]
    assert select(records, status="error") == [limited]
    assert select(records, status="4xx") == [limited]
    assert select(records, status="429") == [limited]
    assert select(records, status="incomplete") == [cut]
    assert select(records, text="paris") == [ok]
    assert prompt_text(ok) == "Weather in Paris?"
    with pytest.raises(JournalError, match="use ok, error"):
        status_matches(ok, "bad")


def test_the_prompt_shown_is_what_the_user_typed() -> None:
    """Claude Code puts `<system-reminder>` blocks before the user's words, and a tool loop's
    later turns carry only tool results: `replay list` shows the words."""
    reminder = {"type": "text", "text": "<system-reminder>\nAs you answer...\n</system-reminder>"}
    typed = {"type": "text", "text": "fix the failing test"}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "ok"}
    messages = [
        {"role": "user", "content": [reminder, typed]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash"}]},
        {"role": "user", "content": [result, reminder]},
    ]
    record = Record.model_validate(_record(client={"body": {"messages": messages}}))
    assert prompt_text(record) == "fix the failing test"
    only = Record.model_validate(
        _record(client={"body": {"messages": [{"role": "user", "content": [result]}]}})
    )
    assert prompt_text(only) == "[tool_result]"


# -- writer --------------------------------------------------------------------------------


def _traced_exchange(clock: Clock, body: dict[str, Any]) -> tuple[Trace, Exchange]:
    exchange = Exchange(id="req_01test", route="messages", client_model="claude-sonnet-4-6")
    exchange.upstream_model = "big"
    trace = Trace(clock, wall=1_700_000_000.0)
    trace.client_request(
        "POST",
        "/v1/messages",
        [("x-api-key", "client-key"), ("x-claude-bridge-replayed-from", "01X")],
    )
    trace.client_body(json.dumps(body).encode())
    trace.prepared(
        Plan(
            model="claude-sonnet-4-6",
            stream=False,
            route=Route("default", "big"),
            dialect="openai",
            session_id=None,
            body={},
            ctx=ReplyContext(model="claude-sonnet-4-6", message_id="msg_1"),
            options=RequestOptions(model="big"),
            dropped=[],
        )
    )
    clock.advance(5)
    trace.upstream_request(
        "POST",
        "http://up/v1/chat/completions",
        [("authorization", f"Bearer {KEY}")],
        json.dumps({"model": "big", "messages": [], "image": IMAGE}).encode(),
    )
    clock.advance(10)
    trace.upstream_response(200, [("content-type", "application/json")])
    trace.upstream_chunk(b'{"choices": []')
    clock.advance(1)
    trace.upstream_chunk(b"}")
    trace.upstream_done()
    return trace, exchange


def test_build_record_redacts_elides_and_times() -> None:
    clock = Clock()
    body = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": IMAGE}]}
    trace, exchange = _traced_exchange(clock, body)
    trace.client_message({"type": "message", "id": "msg_1"})
    exchange.status = 200
    trace.finish()
    record = build_record(trace, exchange, id_=record_id(1.0))
    assert record.client.headers["x-api-key"] == REDACTED
    assert record.upstream is not None and record.upstream.response is not None
    assert record.upstream.request.headers["authorization"] == REDACTED
    assert record.upstream.response.body == {"choices": []}
    assert record.upstream.complete and record.upstream.sent_ms == 5.0
    assert record.elided == 2
    assert record.client.body["messages"][0]["content"].startswith(ELIDED_PREFIX)
    assert record.replayed_from == "01X"
    options = record.routing.options or {}
    assert options["model"] == "big" and options["stream_usage"] is True
    assert RequestOptions(**options) == RequestOptions(model="big")  # rebuilds as it was
    assert record.routing.message_id == "msg_1"
    assert record.timings.upstream_first_byte_ms == 15.0
    assert record.timings.end_ms == 16.0
    assert record.state == "complete"
    full = build_record(trace, exchange, id_=record_id(1.0), full=True)
    assert full.elided == 0 and full.client.body == body


def test_an_exchange_the_shutdown_drain_ended_is_incomplete() -> None:
    clock = Clock()
    trace, exchange = _traced_exchange(clock, {"model": "m", "messages": []})
    drained = Drain().error()
    exchange.status, exchange.error_type, exchange.error = 200, drained.type, drained.message
    trace.finish()
    assert build_record(trace, exchange, id_=record_id(1.0)).state == "incomplete"
    exchange.error = "something else"
    assert build_record(trace, exchange, id_=record_id(1.0)).state == "complete"


def test_recorder_writes_flushed_lines_and_incomplete_ones_at_close(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "j" / "session.jsonl"
    walls = iter([1_700_000_000.0, 1_700_000_001.0, 1_700_000_002.0])
    recorder = Recorder(path, secrets=[KEY], clock=clock, wall=lambda: next(walls))
    done = Exchange(id="req_done", route="messages")
    recorder("start", done)
    assert done.trace is not None
    done.trace.client_body(b'{"model": "m", "note": "' + KEY.encode() + b'"}')
    done.status = 200
    recorder("finish", done)
    # Flushed: readable while the recorder is still open.
    assert [r.request_id for r in load(path).records] == ["req_done"]
    hanging = Exchange(id="req_hanging", route="messages")
    recorder("start", hanging)
    recorder("start", Exchange(id="req_count", route="count_tokens"))  # not recorded
    recorder.close()
    recorder("finish", hanging)  # too late: written once, as incomplete
    records = load(path).records
    assert [(r.request_id, r.state) for r in records] == [
        ("req_hanging", "incomplete"),
        ("req_done", "complete"),
    ]
    text = path.read_text()
    assert KEY not in text and REDACTED in text


def test_secrets_come_from_every_secret_setting() -> None:
    settings = Settings(openai_api_key=KEY, auth_token="client-token-123")
    assert sorted(setting_secrets(settings)) == sorted([KEY, "client-token-123"])


def test_recording_settings_from_env(tmp_path: Path) -> None:
    env = {
        "CLAUDE_BRIDGE_RECORD": "1",
        "CLAUDE_BRIDGE_RECORD_REDACT": "x-one, X-Two",
        "CLAUDE_BRIDGE_RECORD_FULL": "true",
    }
    settings = load_settings(env=env, config_path=None, dotenv_path=None)
    assert settings.record and settings.record_full
    assert settings.record_redact == ["x-one", "X-Two"]
    assert default_dir({"CLAUDE_BRIDGE_HOME": str(tmp_path)}) == tmp_path / "journal"
    assert default_dir({"XDG_STATE_HOME": "/s"}) == Path("/s/claude-bridge/journal")


# -- the frozen v1 journal -----------------------------------------------------------------


def test_the_frozen_v1_journal_still_loads() -> None:
    """Recorded by a real session (tests/test_replay.py) and redacted; never edit it: a new
    format version must read it through `records.upgrade`."""
    journal = load(FROZEN)
    assert journal.warnings == []
    records = journal.records
    assert len(records) >= 5
    assert {r.v for r in records} == {1}
    assert [r.id for r in records] == sorted((r.id for r in records), reverse=True)
    streams = [r for r in records if r.routing.stream and r.status == 200]
    assert streams
    for record in streams:
        assert record.upstream and record.upstream.response and record.upstream.response.chunks
        assert record.reply and record.reply.events
        assert record.reply.events[0][1]["type"] == "message_start"
        assert b"data:" in chunk_data(record.upstream.response.chunks[0])
    assert any(r.status == 429 and r.error and r.error.type == "rate_limit_error" for r in records)
    assert any(r.upstream is None and r.status == 400 for r in records)
    tools = [r for r in records if r.usage.stop_reason == "tool_use"]
    assert tools
    for record in records:
        assert record.timings.started_at > 0
        for name in ("authorization", "x-api-key"):
            if record.client.headers.get(name):
                assert record.client.headers[name] == REDACTED
        if record.upstream:
            assert record.upstream.request.headers.get("authorization") == REDACTED
    text = FROZEN.read_text()
    assert UPSTREAM_KEY not in text and CLIENT_KEY not in text
    # Old records stay re-runnable through today's translation (whether they differ is the
    # business of `replay diff`, not of this test).
    for record in records:
        result = diff_record(record)
        assert result.request.outcome in ("same", "differs")


def test_ids_made_after_another_sort_after_it_within_one_millisecond() -> None:
    first = record_id(1_700_000_000.0001, entropy=b"\x80" * 10)
    second = record_id(1_700_000_000.0002, entropy=b"\x00" * 10, after=first)
    assert second > first
    assert record_time(second) == record_time(first)
    # Without `after`, the random part alone orders ids of the same millisecond.
    assert record_id(1_700_000_000.0002, entropy=b"\x00" * 10) < first
