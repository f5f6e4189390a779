"""Bad configuration (issue 13): through the real CLI entry, every bad setting, file or
directory is one `error:` line naming the setting (and where it was set), exit code 1, never a
traceback, and `serve` never starts on it.

`serve` is given a port something else listens on: were a bad setting let through, it would
fail to bind (exit 3) instead of serving forever inside the test.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import assert_one_error_line, home, invoke

__all__ = ["home"]  # a fixture, used by name

# (environment, config file text, .env text): one bad setting each, and what the line says.
BAD_SETTINGS = {
    "log level from the environment": (
        {"CLAUDE_BRIDGE_LOG_LEVEL": "loud"},
        None,
        "setting log_level: Input should be 'debug', 'info', 'warning' or 'error' "
        "(from CLAUDE_BRIDGE_LOG_LEVEL)",
    ),
    "log level in the config file": ({}, 'log_level = "verbose"\n', "setting log_level: "),
    "port that is not a number": (
        {"CLAUDE_BRIDGE_PORT": "abc"},
        None,
        "setting port: Input should be a valid integer",
    ),
    "negative interval": ({"CLAUDE_BRIDGE_PING_INTERVAL": "-1"}, None, "setting ping_interval"),
    "endless timeout": (
        {"CLAUDE_BRIDGE_READ_TIMEOUT": "inf"},
        None,
        "setting read_timeout: Input should be less than or equal to 1000000",
    ),
    "timeout too long for the timers": (
        {"CLAUDE_BRIDGE_CONNECT_TIMEOUT": "1e308"},
        None,
        "setting connect_timeout",
    ),
    "base URL without a scheme": (
        {"OPENAI_BASE_URL": "localhost:8080/v1"},
        None,
        "setting openai_base_url: must be an http:// or https:// URL with a host",
    ),
    "base URL with a bad port": (
        {"OPENAI_BASE_URL": "http://localhost:99999/v1"},
        None,
        "setting openai_base_url: is not a valid URL",
    ),
    "named upstream's base URL": (
        {},
        '[upstreams.local]\nbase_url = "ftp://files.example/v1"\n',
        "setting upstreams.local.base_url: must be an http:// or https:// URL",
    ),
    "empty host": ({}, 'host = ""\n', "setting host: "),
    "a route to an unknown upstream, brackets shown": (
        {},
        '[[routes]]\npattern = "*haiku*"\nupstream = "nope"\n',
        "declare [upstreams.nope] (known: default)",
    ),
    "boolean": ({"CLAUDE_BRIDGE_RECORD": "maybe"}, None, "setting record: "),
}


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def config_file(home: Path) -> Path:
    """Where the config file is read from by default (`$CLAUDE_BRIDGE_HOME/config.toml`)."""
    path = home / "claude-bridge" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def serve(port: int, *flags: str) -> list[str]:
    return ["serve", "--no-dashboard", "--port", str(port), *flags]


@pytest.mark.parametrize("command", ["config show", "serve"])
@pytest.mark.parametrize(("env", "toml", "says"), BAD_SETTINGS.values(), ids=BAD_SETTINGS)
def test_a_bad_setting_is_one_line(
    config_file: Path,
    busy_port: int,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    env: dict[str, str],
    toml: str | None,
    says: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if toml is not None:
        config_file.write_text(toml, encoding="utf-8")
    args = command.split()
    if command == "serve":  # (a bad port setting gets no `--port`: the flag would win)
        args = ["serve", "--no-dashboard"] if "CLAUDE_BRIDGE_PORT" in env else serve(busy_port)
    assert_one_error_line(invoke(*args), says)


def test_a_bad_log_level_flag_is_one_line(home: Path, busy_port: int) -> None:
    result = invoke(*serve(busy_port, "--log-level", "loud"))
    assert_one_error_line(result, "setting log_level: Input should be")
    assert "(from --log-level)" in result.stderr


@pytest.mark.parametrize("inside", [True, False], ids=["inside-a-file", "a-file"])
def test_an_unwritable_record_dir_refuses_to_start(
    home: Path, tmp_path: Path, busy_port: int, monkeypatch: pytest.MonkeyPatch, inside: bool
) -> None:
    """It used to start, record nothing, and print a traceback on every request."""
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    directory = blocker / "journal" if inside else blocker
    monkeypatch.setenv("CLAUDE_BRIDGE_RECORD_DIR", str(directory))
    result = invoke(*serve(busy_port, "--record"))
    assert_one_error_line(result, "setting record_dir: cannot write a journal in")
    assert "--record-dir" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes and reads whatever the mode")
def test_a_read_only_record_dir_and_an_unreadable_config_file(
    home: Path, tmp_path: Path, busy_port: int, config_file: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = invoke(*serve(busy_port, "--record-dir", str(locked)))
    assert_one_error_line(result, "setting record_dir: cannot write a journal in")
    config_file.write_text("port = 1\n", encoding="utf-8")
    config_file.chmod(0)
    assert_one_error_line(invoke("config", "show"), "cannot read the config file")


@pytest.mark.parametrize("explicit", [False, True], ids=["default-path", "--config"])
def test_a_config_file_that_is_a_directory(home: Path, config_file: Path, explicit: bool) -> None:
    config_file.mkdir()
    args = ["config", "show", *(["--config", str(config_file)] if explicit else [])]
    assert_one_error_line(invoke(*args), "is a directory, not a config file")


def test_a_dotenv_that_is_not_text(home: Path) -> None:
    Path(".env").write_bytes(b"OPENAI_API_KEY=sk-\xff\xfe\n")
    assert_one_error_line(invoke("config", "show"), ".env: not UTF-8 text")


def test_an_unwritable_log_file(home: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    log_file = tmp_path / "a-file" / "bridge.jsonl"
    result = invoke("serve", "--no-dashboard", "--port", "0", "--log-file", str(log_file))
    assert_one_error_line(result, f"--log-file {log_file}: cannot write it")
