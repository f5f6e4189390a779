"""`claude-bridge doctor`: a row per check, ✅ / ⚠️ / ❌, a fix for each ❌, `--json`, exit code 1
on any ❌. Real upstreams on loopback (tests/upstream.py) answer the model listing and the live
completion; the CLI runs in process with an isolated home.

`doctor --claude` runs the real Claude Code: tests/realstack/test_doctor_grid.py. Here, the
pieces of it that need no Claude Code: the scripted upstream through the real proxy with the
`anthropic` SDK, and the README's compatibility table's shape.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anthropic
import pytest
from conftest import BIG_MODEL, SMALL_MODEL, UPSTREAM_KEY, Bridge, bridge_settings, start_bridge
from realstack import build
from test_cli import home, invoke
from test_dashboard import restore_logging
from typer.testing import Result
from upstream import FakeUpstream, JSONReply, RecordedRequest, completion, error_body

from claude_bridge.proxy.background import background_proxy
from claude_bridge.proxy.doctor import cases, grid, scripted, searxng

__all__ = ["home", "restore_logging"]  # fixtures, imported for their use here

ROOT = Path(__file__).resolve().parents[1]

REFUSED = JSONReply(error_body(f"Incorrect API key provided: {UPSTREAM_KEY}"), status=401)


def answer(request: RecordedRequest) -> JSONReply:
    return JSONReply(completion("OK"))


def refuse(request: RecordedRequest) -> JSONReply:
    return REFUSED


@pytest.fixture
def configured(home: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A good configuration of `upstream`, on a free port, and no Claude Code on PATH."""
    upstream.models = [BIG_MODEL, SMALL_MODEL]
    monkeypatch.setenv("OPENAI_BASE_URL", upstream.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("BIG_MODEL", BIG_MODEL)
    monkeypatch.setenv("SMALL_MODEL", SMALL_MODEL)
    monkeypatch.setenv("CLAUDE_BRIDGE_PORT", str(_free_port()))
    empty = home / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return home


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def doctor(*args: str) -> tuple[Result, dict[str, Any]]:
    result = invoke("doctor", "--json", *args)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result, json.loads(result.stdout)


def rows(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [check for check in report["checks"] if check["name"].startswith(name)]


def only(report: dict[str, Any], name: str) -> dict[str, Any]:
    (check,) = rows(report, name)
    return check


def test_a_good_configuration_passes(configured: Path, upstream: FakeUpstream) -> None:
    upstream.always(answer)
    result, report = doctor("--live")
    assert result.exit_code == 0, result.stdout
    assert report["ok"] is True
    listing = only(report, "upstream")
    assert (
        listing["level"] == "ok"
        and "key not refused, 2 models listed: big-model, small-model" in listing["detail"]
    )
    assert only(report, "setting big_model")["detail"] == '"big-model" from BIG_MODEL (environment)'
    completions = rows(report, "completion")
    assert [c["name"] for c in completions] == ["completion big-model", "completion small-model"]
    assert {c["level"] for c in completions} == {"ok"}
    # The live completion went the translated way, asking for one token.
    sent = [r.json for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert [body["model"] for body in sent] == [BIG_MODEL, SMALL_MODEL]
    assert all(body.get("max_tokens", body.get("max_completion_tokens")) == 1 for body in sent)
    assert only(report, "port")["level"] == "ok"
    assert only(report, "auth token")["level"] == "ok"
    assert only(report, "environment")["detail"] == "nothing sends Claude Code elsewhere"


def test_without_live_nothing_is_completed(configured: Path, upstream: FakeUpstream) -> None:
    upstream.always(answer)
    result, report = doctor()
    assert result.exit_code == 0
    assert not rows(report, "completion")
    assert upstream.listings == 1 and not upstream.requests


def test_a_model_the_upstream_does_not_list_is_a_warning(
    configured: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.always(answer)
    monkeypatch.setenv("BIG_MODEL", "gpt-typo")
    result, report = doctor()
    assert result.exit_code == 0
    check = only(report, "model gpt-typo")
    assert check["level"] == "warn" and "does not list 'gpt-typo'" in check["detail"]


def test_a_refused_key_fails_with_its_fix(configured: Path, upstream: FakeUpstream) -> None:
    upstream.always(refuse)
    upstream.listing = REFUSED
    result, report = doctor("--live")
    assert result.exit_code == 1
    listing = only(report, "upstream")
    assert listing["level"] == "fail" and "refused the key: 401" in listing["detail"]
    assert listing["fix"] == "set OPENAI_API_KEY to a valid key"
    live = rows(report, "completion")
    assert live and {c["level"] for c in live} == {"fail"}
    # The proxy answers a refused upstream key with 502 (the client's own key is fine).
    assert live[0]["detail"].startswith("502: upstream 127.0.0.1:")
    assert "refused the API key" in live[0]["detail"]
    assert UPSTREAM_KEY not in result.stdout, "the key the upstream echoed is shown"


def test_an_unreachable_upstream_fails(configured: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{_free_port()}/v1")
    result, report = doctor()
    assert result.exit_code == 1
    listing = only(report, "upstream")
    assert listing["level"] == "fail" and listing["detail"].startswith("cannot reach 127.0.0.1:")
    assert listing["fix"] == "start it, or correct OPENAI_BASE_URL"


def test_a_broken_configuration_is_one_failure_naming_the_setting(
    configured: Path, upstream: FakeUpstream, tmp_path: Path
) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text("read_timout = 5\n", encoding="utf-8")
    result, report = doctor("--config", str(config))
    assert result.exit_code == 1
    check = only(report, "settings")
    assert check["level"] == "fail"
    assert "read_timout: no such setting; did you mean 'read_timeout'?" in check["detail"]
    assert check["fix"]
    assert not rows(report, "upstream") and not upstream.requests
    assert only(report, "Claude Code")["level"] == "warn"  # the rest is still checked


def test_no_claude_code_is_a_warning_with_the_install_line(
    configured: Path, upstream: FakeUpstream
) -> None:
    upstream.always(answer)
    result, report = doctor()
    assert result.exit_code == 0
    check = only(report, "Claude Code")
    assert check == {
        "name": "Claude Code",
        "level": "warn",
        "detail": "not found on PATH",
        "fix": "npm install -g @anthropic-ai/claude-code",
    }


def _fake_claude(folder: Path, script: str) -> Path:
    path = folder / "claude"
    path.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def test_the_installed_claude_code_version_is_shown(
    configured: Path, upstream: FakeUpstream
) -> None:
    upstream.always(answer)
    _fake_claude(configured / "bin", 'echo "2.1.331 (Claude Code)"')
    result, report = doctor()
    check = only(report, "Claude Code")
    assert check["level"] == "ok" and check["detail"].startswith("2.1.331 at ")
    # Claude Code 1.0.x prints this notice on stdout before its version.
    notice = "Claude configuration file not found at: /root/.claude.json"
    _fake_claude(configured / "bin", f"printf '\\n{notice}\\n\\n1.0.128 (Claude Code)\\n'")
    result, report = doctor()
    assert only(report, "Claude Code")["detail"].startswith("1.0.128 at ")
    broken = _fake_claude(configured, "echo 'Segmentation fault' >&2; exit 139")
    result, report = doctor("--claude-path", str(broken))
    assert result.exit_code == 1
    check = only(report, "Claude Code")
    assert check["level"] == "fail" and "exit 139" in check["detail"]


def test_what_sends_claude_code_elsewhere(
    configured: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.always(answer)
    monkeypatch.setenv("CLAUDE_CODE_USE_BEDROCK", "1")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "https://gateway.example")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "token")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    settings = configured / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"env": {"ANTHROPIC_BASE_URL": "https://x.example"}}))
    result, report = doctor()
    assert result.exit_code == 1
    after = [c["name"] for c in report["checks"]].index("Claude Code") + 1
    assert [(c["name"], c["level"]) for c in report["checks"][after:]] == [
        ("CLAUDE_CODE_USE_BEDROCK", "warn"),
        ("ANTHROPIC_BASE_URL", "warn"),  # the shell's: `code` replaces it
        ("credentials", "warn"),
        ("HTTP proxy", "fail"),
        ("ANTHROPIC_BASE_URL", "fail"),  # the settings file's, which wins even over `code`
    ]
    assert only(report, "HTTP proxy")["fix"] == "add 127.0.0.1,localhost to NO_PROXY"
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    _, report = doctor()
    assert only(report, "HTTP proxy")["level"] == "ok"


def test_the_port(
    configured: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.always(answer)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("CLAUDE_BRIDGE_PORT", str(taken.getsockname()[1]))
        result, report = doctor()
    assert result.exit_code == 1
    check = only(report, "port")
    assert check["level"] == "fail" and "already in use" in check["detail"]
    running: Bridge = start_bridge(bridge_settings(upstream.base_url))
    try:
        monkeypatch.setenv("CLAUDE_BRIDGE_PORT", running.url.rsplit(":", 1)[1])
        # The settings of `bridge_settings`: the running serve is this configuration's.
        for name, value in (("CONNECT_TIMEOUT", "5"), ("READ_TIMEOUT", "30"), ("RETRIES", "0")):
            monkeypatch.setenv(f"CLAUDE_BRIDGE_{name}", value)
        result, report = doctor()
        assert result.exit_code == 0
        assert only(report, "port")["detail"] == (
            "a claude-bridge serve of this configuration listens there"
        )
        monkeypatch.setenv("CLAUDE_BRIDGE_RETRIES", "1")
        _, report = doctor()
        check = only(report, "port")
        assert check["level"] == "warn" and check["detail"].startswith("another claude-bridge")
    finally:
        running.stop()


def test_listening_beyond_loopback_without_a_token_fails(
    configured: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.always(answer)
    monkeypatch.setenv("CLAUDE_BRIDGE_HOST", "0.0.0.0")
    monkeypatch.setenv("CLAUDE_BRIDGE_PORT", "0")
    result, report = doctor()
    assert result.exit_code == 1
    check = only(report, "auth token")
    assert check["level"] == "fail" and check["fix"].startswith("set CLAUDE_BRIDGE_AUTH_TOKEN")
    monkeypatch.setenv("CLAUDE_BRIDGE_AUTH_TOKEN", "a-token-for-clients")
    result, report = doctor()
    assert result.exit_code == 0 and only(report, "auth token")["detail"].startswith("set")


def test_the_table(configured: Path, upstream: FakeUpstream) -> None:
    upstream.listing = REFUSED
    result = invoke("doctor")
    assert result.exit_code == 1
    assert "❌" in result.stdout and "fix: set OPENAI_API_KEY to a valid key" in result.stdout
    assert "✅" in result.stdout and "⚠️" in result.stdout


def test_the_grid_without_claude_code_is_one_error_line(configured: Path) -> None:
    result = invoke("doctor", "--claude")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: claude is not on PATH")


# -- the scripted upstream, through the real proxy -----------------------------------------


@pytest.fixture
def doctor_client(tmp_path: Path, restore_logging: None) -> Iterator[anthropic.Anthropic]:
    """A client of the proxy `doctor --claude` starts: the scripted upstream, the built-in
    SearXNG-shaped search backend."""
    upstream = scripted.ScriptedUpstream()
    with (
        searxng.searxng() as search_url,
        background_proxy(
            grid.settings(search_url), log_file=tmp_path / "log", transport=upstream
        ) as target,
    ):
        yield anthropic.Anthropic(base_url=target.url, api_key=target.token, max_retries=0)


def test_the_scripted_upstream_through_the_proxy(doctor_client: anthropic.Anthropic) -> None:
    """What `doctor --claude` serves Claude Code: a Bash call streamed in fragments, then,
    given its result, the upstream's word that the result came back; a cut stream, then the
    whole text; the upstream's 400."""
    client = doctor_client
    tools: list[Any] = [{"name": "Bash", "input_schema": {"type": "object"}}]
    ask: list[Any] = [{"role": "user", "content": "[doctor:parallel] Run both."}]
    with client.messages.stream(
        model="claude-opus-5-5", max_tokens=100, messages=ask, tools=tools
    ) as stream:
        first = stream.get_final_message()
    calls = [b for b in first.content if b.type == "tool_use"]
    assert [c.input for c in calls] == [
        {"command": f"echo {word}", "description": "Print a doctor marker"}
        for word in scripted.PARALLEL_MARKERS
    ]
    results = [
        {"type": "tool_result", "tool_use_id": c.id, "content": f"{word}\n"}
        for c, word in zip(calls, scripted.PARALLEL_MARKERS, strict=True)
    ]
    turn: list[Any] = [*ask, {"role": "assistant", "content": first.content}]
    turn.append({"role": "user", "content": results})
    second = client.messages.create(
        model="claude-opus-5-5", max_tokens=100, messages=turn, tools=tools
    )
    assert second.content[0].type == "text"
    assert second.content[0].text == "Both ran: doctor-one | doctor-two"
    cut: list[Any] = [{"role": "user", "content": "[doctor:cut] Say it."}]
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(model="m", max_tokens=100, messages=cut) as stream,
    ):
        stream.get_final_message()
    again = client.messages.create(model="m", max_tokens=100, messages=cut)
    assert again.content[0].type == "text" and again.content[0].text == scripted.CUT_TEXT
    with pytest.raises(anthropic.BadRequestError, match=scripted.UPSTREAM_ERROR):
        client.messages.create(
            model="m", max_tokens=100, messages=[{"role": "user", "content": "[doctor:error]"}]
        )


def test_the_scripted_search_through_the_proxy(doctor_client: anthropic.Anthropic) -> None:
    """The WebSearch case as Claude Code meets it: ToolSearch loads the deferred tool, then
    WebSearch is called with the inner case's marker; Claude Code's own request with the
    `web_search` server tool gets the proxy's search on the built-in backend and the
    upstream's summary; given the tool result, the upstream confirms the backend's URL."""
    client = doctor_client
    ask: list[Any] = [{"role": "user", "content": "[doctor:web_search] Search."}]
    deferred: list[Any] = [{"name": "ToolSearch", "input_schema": {"type": "object"}}]
    load = client.messages.create(model="m", max_tokens=100, messages=ask, tools=deferred)
    assert [(b.type, getattr(b, "input", None)) for b in load.content] == [
        ("tool_use", {"query": "select:WebSearch", "max_results": 1})
    ]
    loaded = [*deferred, {"name": "WebSearch", "input_schema": {"type": "object"}}]
    call = client.messages.create(model="m", max_tokens=100, messages=ask, tools=loaded)
    (search,) = [b for b in call.content if b.type == "tool_use"]
    query = cast(dict[str, str], search.input)["query"]
    side: list[Any] = [{"role": "user", "content": f"Perform a web search for the query: {query}"}]
    server: list[Any] = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 8}]
    with client.messages.stream(model="m", max_tokens=100, messages=side, tools=server) as stream:
        searched = stream.get_final_message()
    kinds = [block.type for block in searched.content]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text"]
    found = searched.content[1]
    assert found.type == "web_search_tool_result" and isinstance(found.content, list)
    assert [(r.url, r.title) for r in found.content] == [(searxng.RESULT_URL, searxng.RESULT_TITLE)]
    assert searched.usage.server_tool_use is not None
    assert searched.usage.server_tool_use.web_search_requests == 1
    result = f"Links: {json.dumps([{'url': searxng.RESULT_URL}])}"
    turn: list[Any] = [*ask, {"role": "assistant", "content": call.content}]
    turn.append({"role": "user", "content": [_tool_result(search.id, result)]})
    done = client.messages.create(model="m", max_tokens=100, messages=turn, tools=loaded)
    assert done.content[0].type == "text"
    assert done.content[0].text == f"{scripted.SEARCH_FOUND}: {searxng.RESULT_URL}"


def _tool_result(call_id: str, content: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": content}


# -- the README's compatibility table ------------------------------------------------------

TABLE = re.compile(r"<!-- compatibility:start -->\n(.*?)<!-- compatibility:end -->", re.S)


def test_the_readme_compatibility_table_has_the_grid_s_shape() -> None:
    """The table is the grid's output (tests/realstack/test_doctor_grid.py writes and checks
    it): its columns are the grid's features, each row a release the grid ran on, every cell
    a result the grid gives."""
    found = TABLE.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert found, "README.md has no compatibility table between its markers"
    lines = found.group(1).strip().splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0] == ["Claude Code", *(label for _, label in cases.FEATURES)]
    versions = []
    for row in cells[2:]:
        versions.append(row[0])
        assert re.fullmatch(r"\d+\.\d+\.\d+", row[0]), row
        assert len(row) == len(cells[0]), row
        for label, mark in zip(cells[0][1:], row[1:], strict=True):
            assert mark in ("✅", "❌"), (row[0], label)
    assert build.CLAUDE_CODE_VERSION in versions
    assert versions == sorted(versions, key=lambda v: tuple(map(int, v.split("."))), reverse=True)


def test_the_releases_the_grid_runs_on() -> None:
    """The registry's newest release and the newest of each of the two minor lines before it,
    by number (2.0.77 after 2.0.9), pre-releases left out; fewer when fewer lines exist."""
    published = ["0.2.9", "1.0.1", "1.0.128", "2.0.9", "2.0.77", "2.1.331", "2.1.332"]
    assert build.grid_versions([*published, "2.2.0-beta.1"]) == ["2.1.332", "2.0.77", "1.0.128"]
    assert build.grid_versions(["1.0.0", "1.0.2"]) == ["1.0.2"]
