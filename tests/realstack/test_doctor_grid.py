"""`claude-bridge doctor --claude` on every Claude Code release the project vouches for: the
pinned one and, as the npm registry answers now, the newest release and the newest of each of
the two minor lines before it (`build.compatibility_versions`), each installed once into the
tier's cache.

The README's compatibility table is what these grids produce: the test fails when a row it has
differs (a feature that broke), warns about a release it lacks, and, with
CLAUDE_BRIDGE_WRITE_COMPATIBILITY=1, writes it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from claude_bridge.proxy.doctor.grid import Grid, compatibility_markdown, run_grid

from . import build

pytestmark = pytest.mark.realstack

README = build.ROOT / "README.md"
TABLE = re.compile(r"(<!-- compatibility:start -->\n)(.*?)(<!-- compatibility:end -->)", re.S)
WRITE = "CLAUDE_BRIDGE_WRITE_COMPATIBILITY"
CLI_TIMEOUT = 600


def readme_table(text: str) -> str | None:
    """The compatibility table of the README's text, None when it has none."""
    found = TABLE.search(text)
    return found.group(2) if found else None


@pytest.fixture(scope="module")
def releases() -> dict[str, Path]:
    if shutil.which("npm") is None:
        pytest.skip("real-stack tier: npm is not installed")
    try:
        return build.claude_codes(build.compatibility_versions())
    except build.BuildError as exc:
        pytest.fail(f"installing Claude Code failed: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def grids(releases: dict[str, Path]) -> dict[str, Grid]:
    return {version: run_grid(str(claude)) for version, claude in releases.items()}


def test_each_grid_ran_the_release_it_names(grids: dict[str, Grid]) -> None:
    assert {version: grid.version for version, grid in grids.items()} == {v: v for v in grids}
    assert build.CLAUDE_CODE_VERSION in grids


def test_every_feature_works_on_every_release(grids: dict[str, Grid]) -> None:
    failures = [
        f"Claude Code {version}: {outcome.label}: {outcome.detail}"
        for version, grid in grids.items()
        for outcome in grid.outcomes
        if outcome.status == "fail"
    ]
    assert not failures, "\n".join(failures)


def test_the_readme_table_is_what_the_grids_produced(grids: dict[str, Grid]) -> None:
    """Every README row for a release the grids ran is what its grid produced, and the pinned
    release has a row. A release published since the README was written is reported, not
    failed: the README claims nothing about it, and CI must not break the day npm publishes."""
    table = compatibility_markdown(
        [(version, {o.case: o.status for o in grid.outcomes}) for version, grid in grids.items()]
    )
    text = README.read_text(encoding="utf-8")
    if os.environ.get(WRITE):
        README.write_text(
            TABLE.sub(lambda m: m.group(1) + table + m.group(3), text), encoding="utf-8"
        )
    written = readme_table(README.read_text(encoding="utf-8"))
    assert written is not None, "README.md has no compatibility table"
    claimed, produced = table_rows(written), table_rows(table)
    assert written.splitlines()[0] == table.splitlines()[0], "the feature columns differ"
    assert build.CLAUDE_CODE_VERSION in claimed, "the pinned release has no README row"
    differing = {
        v: (claimed[v], row) for v, row in produced.items() if v in claimed and claimed[v] != row
    }
    assert not differing, (
        f"README.md's compatibility rows differ from the grids: {differing}; rerun with "
        f"{WRITE}=1 to write them:\n{table}"
    )
    unlisted = sorted(set(produced) - set(claimed))
    if unlisted:
        warnings.warn(
            f"Claude Code {', '.join(unlisted)} passed the grid but has no README row; rerun "
            f"with {WRITE}=1 to add it",
            stacklevel=1,
        )


def table_rows(table: str) -> dict[str, str]:
    """A compatibility table's rows by Claude Code version."""
    return {
        line.split("|")[1].strip(): line for line in table.splitlines()[2:] if line.startswith("|")
    }


def test_the_command(releases: dict[str, Path]) -> None:
    """`claude-bridge doctor --claude` as a user runs it, on the pinned release."""
    command = Path(sys.executable).parent / "claude-bridge"
    claude = releases[build.CLAUDE_CODE_VERSION]
    done = subprocess.run(
        [str(command), "doctor", "--claude", "--claude-path", str(claude), "--json"],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["claude_code"]["version"] == build.CLAUDE_CODE_VERSION
    assert {f["status"] for f in report["features"]} == {"pass"}
