"""Secrets and files (issue 13): every secret of the settings is scrubbed from logs and
journals, even cut or split; a password in a base URL is Basic auth, never shown; journals and
logs are private files whatever the umask; `.env` is read by python-dotenv."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import UPSTREAM_KEY, Bridge, bridge_settings
from test_cli import home, invoke
from test_dashboard import restore_logging
from test_replay import recording_bridge
from upstream import FakeUpstream, JSONReply, RawReply, SSEReply, completion, text_stream

from claude_bridge.cli.commands.serve import secrets_of
from claude_bridge.proxy import logs
from claude_bridge.proxy.config import ConfigError, Settings, load_settings
from claude_bridge.proxy.events import Exchange
from claude_bridge.proxy.journal.reader import load
from claude_bridge.proxy.journal.records import REDACTED, chunk_data
from claude_bridge.proxy.journal.writer import Recorder

__all__ = ["home", "restore_logging"]  # fixtures, used by name

NAMED_KEY = "sk-named-SECRET-0123456789abcdefghij"
PASSWORD = "hunter2-PW-secret"
TOKEN = "client-token-SECRET-42"
HI = [{"role": "user", "content": "hi"}]


def named_settings(upstream_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """The default upstream and one named upstream with its own key, every model routed to
    the named one."""
    return bridge_settings(
        upstream_url,
        upstreams={"named": {"base_url": upstream_url, "api_key": NAMED_KEY}},
        routes=[{"pattern": "*", "upstream": "named"}],
        record_dir=str(tmp_path / "journal"),
        **overrides,
    )


def files_under(directory: Path) -> dict[Path, bytes]:
    found = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    assert found
    return found


def assert_absent(secret: str, directory: Path, shortest: int = 8) -> None:
    """No piece of `secret` of `shortest` characters in any file under `directory`, nor in
    a recorded chunk (one that is not UTF-8 on its own is kept as base64)."""
    pieces = {secret[i : i + shortest] for i in range(len(secret) - shortest + 1)}
    for path, data in files_under(directory).items():
        if path.suffix == ".jsonl" and path.parent.name == "journal":
            data += b"".join(recorded_chunks(path))
        for piece in pieces:
            assert piece.encode() not in data, (path, piece)


def recorded_chunks(journal: Path) -> list[bytes]:
    chunks = []
    for record in load(journal).records:
        if record.upstream and record.upstream.response:
            chunks += [chunk_data(c) for c in record.upstream.response.chunks or []]
    return chunks


# -- one list of every secret ------------------------------------------------------------


def test_settings_list_every_secret(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[upstreams.file]\nbase_url = "http://h1/v1"\napi_key = "sk-in-the-file-0123"\n'
        '[upstreams.env]\nbase_url = "http://h2/v1"\napi_key_env = "NAMED_KEY"\n'
        f'[upstreams.basic]\nbase_url = "http://bob:{PASSWORD}@h3/v1"\n',
        encoding="utf-8",
    )
    env = {
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "CLAUDE_BRIDGE_AUTH_TOKEN": TOKEN,
        "NAMED_KEY": NAMED_KEY,
    }
    settings = load_settings(config_path=config, env=env, dotenv_path=None)
    expected = {UPSTREAM_KEY, TOKEN, NAMED_KEY, "sk-in-the-file-0123", PASSWORD}
    assert set(settings.secrets()) == expected
    assert set(secrets_of(settings)) == expected  # the log scrubber's list is the same


# -- logs --------------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_log_file_scrubs_named_upstream_keys_and_cut_bodies(tmp_path: Path) -> None:
    settings = named_settings("http://127.0.0.1:9/v1", tmp_path)
    path = tmp_path / "bridge.jsonl"
    logs.configure("debug", file=path, secrets=secrets_of(settings))
    log = logging.getLogger("claude_bridge.upstream")
    log.warning("upstream said: invalid key %s", NAMED_KEY)
    # A debug body cuts long strings at 200 characters: the key straddles the cut.
    body = {"messages": [{"role": "user", "content": "x" * 190 + NAMED_KEY + "y" * 100}]}
    logs.log_body(log, "client request", json.dumps(body).encode())
    for handler in logging.getLogger("claude_bridge").handlers:
        handler.flush()
    text = path.read_text(encoding="utf-8")
    assert "invalid key" in text and "xxxxx" in text
    assert_absent(NAMED_KEY, tmp_path)


# -- journals ----------------------------------------------------------------------------


def _stream_exchange(recorder: Recorder, reads: list[bytes]) -> None:
    """One streamed exchange whose upstream answer arrived in `reads`."""
    exchange = Exchange(id="req_split", route="messages")
    recorder("start", exchange)
    trace = exchange.trace
    assert trace is not None
    trace.client_body(json.dumps({"model": "m", "max_tokens": 5, "messages": HI}).encode())
    trace.upstream_request("POST", "http://127.0.0.1:9/v1/chat/completions", [], b"{}")
    trace.upstream_response(200, [("content-type", "text/event-stream")])
    for data in reads:
        trace.upstream_chunk(data)
    trace.upstream_done()
    exchange.status = 200
    recorder("finish", exchange)


@pytest.mark.parametrize(
    ("encoding", "cut"),
    [("utf-8", 1), ("utf-8", len(NAMED_KEY) // 2), ("utf-8", len(NAMED_KEY) - 1), ("base64", 0)],
    ids=["after-1", "half", "before-last", "chunk-in-base64"],
)
def test_journal_scrubs_a_named_key_split_across_two_reads(
    tmp_path: Path, encoding: str, cut: int
) -> None:
    """The key is in the upstream's SSE; the two raw reads are recorded as two chunks, cut
    `cut` characters into the key. A read that ends inside a multibyte character is recorded
    as base64, out of the line scrub's sight: a key in it must go all the same."""
    settings = named_settings("http://127.0.0.1:9/v1", tmp_path, record=True)
    recorder = Recorder.from_settings(settings)
    around = "é" if encoding == "base64" else "e"
    event = f'data: {{"choices":[{{"delta":{{"content":"{around}{NAMED_KEY}{around}"}}}}]}}\n\n'
    data = event.encode()
    start = data.index(NAMED_KEY.encode())
    at = start + cut if cut else start + len(NAMED_KEY) + 1  # base64: inside the second é
    _stream_exchange(recorder, [data[:at], data[at:]])
    recorder.close()

    assert_absent(NAMED_KEY, tmp_path / "journal")
    (record,) = load(recorder.path).records
    assert record.upstream and record.upstream.response and record.upstream.response.chunks
    chunks = [chunk_data(c) for c in record.upstream.response.chunks]
    assert len(chunks) == 2  # the reads stay apart, with their offsets
    assert REDACTED.encode() in b"".join(chunks)
    assert b"".join(chunks) == data.replace(NAMED_KEY.encode(), REDACTED.encode())


def test_a_journal_that_stops_being_writable_is_one_warning(tmp_path: Path) -> None:
    """No traceback per request: one warning line for a run of failures."""
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    recorder = Recorder(blocker / "journal" / "session.jsonl")
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = seen.append  # type: ignore[method-assign]
    journal_log = logging.getLogger("claude_bridge.journal")
    journal_log.addHandler(handler)
    try:
        for _ in range(3):
            _stream_exchange(recorder, [b"data: {}\n\n"])
    finally:
        journal_log.removeHandler(handler)
    (warning,) = seen
    assert warning.exc_info is None and "cannot write the journal" in warning.getMessage()
    assert recorder.written == 0


def test_journal_of_a_real_exchange_has_no_named_key(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The named upstream echoes its key, whole in an error and in a stream: recorded by a
    real server, nowhere in the journal."""
    settings = named_settings(upstream.base_url, tmp_path)
    bridge, recorder = recording_bridge(settings)
    try:
        upstream.reply(
            JSONReply({"error": {"message": f"Incorrect API key provided: {NAMED_KEY}"}}, 401),
            SSEReply(text_stream(["your key is ", NAMED_KEY[:10], NAMED_KEY[10:]])),
        )
        with httpx.Client(base_url=bridge.url, timeout=20) as http:
            for stream in (False, True):
                body = {"model": "claude-x", "max_tokens": 5, "messages": HI, "stream": stream}
                http.post("/v1/messages", json=body)
    finally:
        bridge.stop()
        recorder.close()
    assert upstream.requests[0].headers["authorization"] == f"Bearer {NAMED_KEY}"
    assert len(load(recorder.path).records) == 2
    assert NAMED_KEY.encode() not in recorder.path.read_bytes()


# -- upstream error text -----------------------------------------------------------------


def test_upstream_error_text_is_scrubbed_before_it_is_cut(
    make_bridge: Any, upstream: FakeUpstream
) -> None:
    """The error message is cut at 500 characters; a key echoed at character 480 used to
    leave its first 20 characters in the message the client got."""
    bridge: Bridge = make_bridge()
    upstream.reply(RawReply(f"{'x' * 479} {UPSTREAM_KEY} and more", status=400))
    response = httpx.post(
        bridge.url + "/v1/messages",
        json={"model": "claude-x", "max_tokens": 5, "messages": HI},
        timeout=20,
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("xxx")
    assert UPSTREAM_KEY[:8] not in message


# -- a password in a base URL ------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_a_base_url_password_is_basic_auth_and_never_written(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    url = upstream.base_url.replace("http://", f"http://bob:{PASSWORD}@")
    settings = bridge_settings(
        url, openai_api_key=None, record_dir=str(tmp_path / "journal"), log_level="debug"
    )
    logs.configure("debug", file=tmp_path / "bridge.jsonl", secrets=secrets_of(settings))
    bridge, recorder = recording_bridge(settings)
    try:
        upstream.reply(JSONReply(completion("hi")))
        body = {"model": "claude-x", "max_tokens": 5, "messages": HI}
        assert httpx.post(bridge.url + "/v1/messages", json=body, timeout=20).status_code == 200
    finally:
        bridge.stop()
        recorder.close()
    sent = upstream.last
    basic = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    assert sent.headers["authorization"] == f"Basic {basic}"
    assert sent.path == "/v1/chat/completions"
    (record,) = load(recorder.path).records
    assert record.upstream is not None and "@" not in record.upstream.request.url
    assert_absent(PASSWORD, tmp_path)


def test_config_show_masks_a_base_url_password(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"https://bob:{PASSWORD}@gateway.example/v1")
    result = invoke("config", "show")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["openai_base_url"] == "https://bob:****@gateway.example/v1"
    assert PASSWORD not in result.stdout + result.stderr
    # `config init` writes the URL without its credentials (they stay in the environment).
    assert invoke("config", "init").exit_code == 0
    written = (home / "claude-bridge" / "config.toml").read_text(encoding="utf-8")
    assert "https://gateway.example/v1" in written and PASSWORD not in written


@pytest.mark.parametrize(
    ("toml", "env", "setting"),
    [
        ("", {"OPENAI_BASE_URL": f"http://bob:{PASSWORD}@h/v1"}, "openai_api_key"),
        (
            f'[upstreams.gw]\nbase_url = "http://bob:{PASSWORD}@h/v1"\napi_key_env = "GW_KEY"\n',
            {"GW_KEY": NAMED_KEY},
            "upstreams.gw.api_key",
        ),
    ],
    ids=["top-level", "named"],
)
def test_a_base_url_password_next_to_a_key_is_refused(
    tmp_path: Path, toml: str, env: dict[str, str], setting: str
) -> None:
    """Both would be the `Authorization` header: one line names the setting to drop."""
    config = tmp_path / "config.toml"
    config.write_text(toml, encoding="utf-8")
    environ = {"OPENAI_API_KEY": UPSTREAM_KEY, **env}
    with pytest.raises(ConfigError) as caught:
        load_settings(env=environ, config_path=config, dotenv_path=None)
    message = str(caught.value)
    assert message.startswith(f"setting {setting}: ") and "Basic auth" in message
    assert PASSWORD not in message and NAMED_KEY not in message and "\n" not in message


# -- private files -----------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
def test_journal_directory_and_files_are_private(tmp_path: Path) -> None:
    env = {"CLAUDE_BRIDGE_HOME": str(tmp_path / "home")}
    settings = Settings(record=True)
    # A default directory an older version created open to others is tightened...
    default = tmp_path / "home" / "journal"
    default.mkdir(parents=True, mode=0o755)
    recorder = Recorder.from_settings(settings, env)
    assert recorder.path.parent == default
    assert (mode(default), mode(recorder.path), recorder.warnings) == (0o700, 0o600, [])
    # ... a new one is made private...
    fresh = Recorder.from_settings(Settings(record=True, record_dir=str(tmp_path / "new" / "j")))
    assert (mode(fresh.path.parent), mode(fresh.path)) == (0o700, 0o600)
    # ... and one the user named is theirs: left as it is, with a warning.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    named = Recorder.from_settings(Settings(record=True, record_dir=str(shared)))
    assert (mode(shared), mode(named.path)) == (0o755, 0o600)
    assert len(named.warnings) == 1 and "chmod 700" in named.warnings[0]
    for each in (recorder, fresh, named):
        each.close()


@pytest.mark.usefixtures("umask_022", "restore_logging")
def test_log_files_are_private_rotated_ones_too(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "bridge.jsonl"
    path.parent.mkdir()
    path.write_text("", encoding="utf-8")
    path.chmod(0o644)  # left by an older version
    logs.configure("info", file=path, max_bytes=300, backups=2)
    log = logging.getLogger("claude_bridge.test")
    for number in range(20):
        log.info("line %d %s", number, "x" * 50)
    files = sorted(path.parent.iterdir())
    assert [p.name for p in files] == ["bridge.jsonl", "bridge.jsonl.1", "bridge.jsonl.2"]
    assert {mode(p) for p in files} == {0o600}


# -- .env --------------------------------------------------------------------------------


def test_dotenv_values_lose_quotes_and_comments_and_stay_out_of_the_environment(
    tmp_path: Path,
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        f'OPENAI_API_KEY="{UPSTREAM_KEY}" # the work key\n'
        "BIG_MODEL='qwen3 coder'  # quoted, with a space\n"
        'SMALL_MODEL="a\\"b"\n',
        encoding="utf-8",
    )
    before = dict(os.environ)
    settings = load_settings(env={}, config_path=None, dotenv_path=dotenv)
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == UPSTREAM_KEY
    assert (settings.big_model, settings.small_model) == ("qwen3 coder", 'a"b')
    assert dict(os.environ) == before
