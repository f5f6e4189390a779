"""`doctor --claude`: the installed Claude Code, run through this proxy against the scripted
upstream, case by case (`cases.py`).

The proxy runs in a thread of this process (`background.background_proxy`) with the scripted
upstream as its transport and a SearXNG-shaped search backend on loopback (`searxng.py`), so
every request takes the proxy's real path: translation, relay, errors, searches. Claude Code
gets the environment `claude-bridge code` gives it (`launch.claude_env`) on a fresh home, and
runs non-interactively (`-p`, `--output-format stream-json --verbose`), two cases at a time.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from ..background import Target, background_proxy
from ..config import Settings
from ..launch import claude_env
from ..windows import Windows
from . import scripted
from .cases import FEATURES, IMAGE_FILE, Case, Run, cases, png
from .checks import claude_version
from .searxng import searxng

Status = Literal["pass", "fail"]
RUN_TIMEOUT = 180.0
"""Seconds one Claude Code run may take (its own retries of a cut stream included)."""
METRICS_TIMEOUT = 10.0
JOBS = 2
"""Claude Code runs at once: each is a Node process that mostly waits."""
ALLOWED = ("--allowedTools", "Bash(echo:*)", "Read", "Task", "Agent", "WebSearch")
"""What the cases' tool calls need: `Task` names the subagent tool before 2.1, `Agent` after."""
COUNTED = 'claude_bridge_count_tokens_requests_total{status="200"}'


@dataclass(frozen=True)
class Outcome:
    case: str
    label: str
    status: Status
    detail: str


@dataclass(frozen=True)
class Grid:
    claude: str
    version: str
    outcomes: list[Outcome]

    @property
    def passed(self) -> bool:
        return all(o.status == "pass" for o in self.outcomes)

    def as_json(self) -> dict[str, Any]:
        return {
            "claude_code": {"version": self.version, "path": self.claude},
            "passed": self.passed,
            "features": [vars(o) for o in self.outcomes],
        }


def settings(search_url: str) -> Settings:
    """The proxy's: every model to the scripted one, whose window Claude Code is told;
    searches to the SearXNG-shaped backend at `search_url`."""
    return Settings.model_validate(
        {
            "openai_base_url": "http://scripted.claude-bridge.invalid/v1",
            "openai_api_key": "doctor-no-key",
            "provider": "generic",
            "big_model": scripted.MODEL,
            "small_model": scripted.MODEL,
            "retries": 0,
            "models": {scripted.MODEL: {"context_window": 200_000, "max_output_tokens": 32_000}},
            "web_search": {"backend": "searxng", "url": search_url},
        }
    )


class _Runner:
    """Runs one case's Claude Code and judges what it did."""

    def __init__(
        self,
        claude: str,
        target: Target,
        env: Mapping[str, str],
        workspace: Path,
        upstream: scripted.ScriptedUpstream,
    ) -> None:
        self.claude = claude
        self.target = target
        self.env = env
        self.workspace = workspace
        self.upstream = upstream

    def counted(self) -> int:
        """count_tokens requests answered 200 so far, from the proxy's own metrics (the proxy
        counts tokens itself: the upstream never sees them)."""
        answer = httpx.get(
            self.target.url + "/metrics",
            headers={"authorization": f"Bearer {self.target.token}"},
            timeout=METRICS_TIMEOUT,
        )
        for line in answer.text.splitlines():
            if line.startswith(COUNTED):
                return int(float(line.split()[-1]))
        return 0

    def run(self, case: Case) -> Outcome:
        before = self.counted()
        argv = [self.claude, "-p", case.prompt, "--output-format", "stream-json", "--verbose"]
        argv += ["--max-turns", "6", *ALLOWED]
        try:
            done = subprocess.run(
                argv,
                cwd=self.workspace,
                env={**self.env, **case.env},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            detail = f"Claude Code did not finish in {RUN_TIMEOUT:.0f} s"
            return Outcome(case.name, case.label, "fail", detail)
        seen = self.upstream.requests(case.name)
        if case.inner:
            seen += self.upstream.requests(case.inner)
        run = Run(done.returncode, done.stdout, done.stderr, seen, self.counted() - before)
        problem = case.check(run)
        if problem is None:
            return Outcome(case.name, case.label, "pass", case.about)
        return Outcome(case.name, case.label, "fail", problem)

    def run_all(self, chosen: list[Case], jobs: int) -> list[Outcome]:
        """Every case, `jobs` at a time but those that must run `alone`; in `chosen`'s order."""
        together = [case for case in chosen if not case.alone]
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            done = dict(zip(map(id, together), pool.map(self.run, together), strict=True))
        done |= {id(case): self.run(case) for case in chosen if case.alone}
        return [done[id(case)] for case in chosen]


def run_grid(claude: str, *, jobs: int = JOBS) -> Grid:
    """Every case with the Claude Code at `claude`, through a proxy started for the grid."""
    claude = os.path.abspath(claude)  # the runs' working directory is another
    version = claude_version(claude)
    with tempfile.TemporaryDirectory(prefix="claude-bridge-doctor-") as scratch:
        root = Path(scratch)
        workspace, home = root / "workspace", root / "home"
        workspace.mkdir()
        (home / ".claude").mkdir(parents=True)
        (workspace / IMAGE_FILE).write_bytes(png())
        base = {
            "PATH": os.environ.get("PATH", os.defpath),  # Claude Code before 2.1 needs node
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "NO_COLOR": "1",
            "DISABLE_AUTOUPDATER": "1",
        }
        upstream = scripted.ScriptedUpstream()
        with (
            searxng() as search_url,
            background_proxy(
                proxy := settings(search_url), log_file=root / "proxy.log", transport=upstream
            ) as target,
        ):
            env = claude_env(target, proxy, Windows(proxy), base)
            runner = _Runner(claude, target, env, workspace, upstream)
            outcomes = runner.run_all(cases(workspace), jobs)
    return Grid(claude, version, outcomes)


MARKS = {"pass": "✅", "fail": "❌"}


def compatibility_markdown(grids: Sequence[tuple[str, Mapping[str, Status]]]) -> str:
    """The README's compatibility table: a row per Claude Code version (as given), a column
    per feature; a feature a grid did not report is `?`."""
    head = "| Claude Code | " + " | ".join(label for _, label in FEATURES) + " |"
    rule = "|---|" + "---|" * len(FEATURES)
    rows = [
        f"| {version} | "
        + " | ".join(MARKS.get(statuses.get(name, ""), "?") for name, _ in FEATURES)
        + " |"
        for version, statuses in grids
    ]
    return "\n".join([head, rule, *rows]) + "\n"
