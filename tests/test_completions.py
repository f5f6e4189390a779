"""completions/ is generated from the Typer app and stays so; the installed command completes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from claude_bridge.cli import completions

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "completions"
REGENERATE = "regenerate with: .venv/bin/python -m claude_bridge.cli.completions completions"
COMMAND = Path(sys.executable).parent / "claude-bridge"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("_CLAUDE_BRIDGE", "_TYPER", "COMP_"))
    }
    return {**env, "HOME": str(home), "NO_COLOR": "1", **extra}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_files_are_generated() -> None:
    expected = completions.scripts()
    present = sorted(path.name for path in FOLDER.iterdir())
    assert present == sorted(expected), f"completions/ holds {present}; {REGENERATE}"
    for name, text in expected.items():
        assert (FOLDER / name).read_text(encoding="utf-8") == text, f"{name} is stale; {REGENERATE}"


def test_unknown_shell_is_refused() -> None:
    with pytest.raises(ValueError, match="bash, zsh, fish"):
        completions.script("tcsh")


@pytest.mark.parametrize("shell", completions.SHELLS)
def test_show_completion_prints_the_same_script(shell: str, tmp_path: Path) -> None:
    """What the installed command's own `--show-completion` prints is what we ship."""
    env = _env(tmp_path, _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    result = _run([str(COMMAND), "--show-completion", shell], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == completions.script(shell), REGENERATE


@pytest.mark.parametrize(
    ("shell", "installed"),
    [
        ("bash", ".bash_completions/claude-bridge.sh"),
        ("zsh", ".zfunc/_claude-bridge"),
        ("fish", ".config/fish/completions/claude-bridge.fish"),
    ],
)
def test_install_completion_still_works(shell: str, installed: str, tmp_path: Path) -> None:
    env = _env(tmp_path, _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    result = _run([str(COMMAND), "--install-completion", shell], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{shell} completion installed" in result.stdout
    text = (tmp_path / installed).read_text(encoding="utf-8")
    assert text.strip() == completions.script(shell).strip()


def test_the_app_answers_completion_requests(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        _CLAUDE_BRIDGE_COMPLETE="complete_bash",
        COMP_WORDS="claude-bridge ",
        COMP_CWORD="1",
    )
    result = _run([str(COMMAND)], env)
    assert result.returncode == 0, result.stderr
    assert {"serve", "translate", "count-tokens", "config"} <= set(result.stdout.split())


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_script_completes_a_subcommand(tmp_path: Path) -> None:
    """Source the shipped bash script in a real bash and complete `claude-bridge se<TAB>`."""
    script = FOLDER / completions.FILE_NAMES["bash"]
    probe = (
        f"source {script}\n"
        "COMP_WORDS=(claude-bridge se); COMP_CWORD=1\n"
        "_claude_bridge_completion claude-bridge\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    path = f"{COMMAND.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = _run(["bash", "--noprofile", "--norc", "-c", probe], _env(tmp_path, PATH=path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["serve"]
