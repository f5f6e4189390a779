"""`serve`'s recording and upstream-replay options, and what they build.

`serve` declares the options below, passes `record_flags(...)` to its settings, and hands
`recording(...)`'s recorder and transport to `create_app`::

    record: bool = RECORD_OPTION, record_dir: Path = RECORD_DIR_OPTION, ...
    settings = settings_from(config, ..., **record_flags(record, record_dir, record_full))
    wiring = recording(settings, upstream_replay=..., replay_miss=..., replay_timing=...)
    app = create_app(settings, bus=bus, transport=wiring.transport, recorder=wiring.recorder)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import typer

from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.journal.reader import JournalError, load
from claude_bridge.proxy.journal.writer import Recorder
from claude_bridge.proxy.replay import ReplayTransport
from claude_bridge.proxy.transport import pooled_transport


class ReplayMiss(StrEnum):
    error = "error"
    forward = "forward"


RECORD_OPTION = typer.Option(
    None,
    "--record/--no-record",
    help="Record every exchange to a journal (see `claude-bridge replay`); default: the "
    "`record` setting.",
)
RECORD_DIR_OPTION = typer.Option(
    None,
    "--record-dir",
    help="Journal directory (implies --record); default $CLAUDE_BRIDGE_HOME/journal or "
    "~/.local/state/claude-bridge/journal.",
    file_okay=False,
)
RECORD_FULL_OPTION = typer.Option(
    None, "--record-full", help="Keep large base64 payloads (images, PDFs) in the journal."
)
UPSTREAM_REPLAY_OPTION = typer.Option(
    None,
    "--upstream-replay",
    help="Answer upstream calls from this journal (file or directory): no network, no key.",
    metavar="JOURNAL",
)
REPLAY_MISS_OPTION = typer.Option(
    ReplayMiss.error,
    "--replay-miss",
    help="With --upstream-replay, a request the journal has no answer for: error (404) or "
    "forward it to the real upstream.",
)
REPLAY_TIMING_OPTION = typer.Option(
    False, "--replay-timing", help="With --upstream-replay, keep the recorded delays."
)


def record_flags(
    record: bool | None, record_dir: Path | None, record_full: bool | None
) -> dict[str, Any]:
    """The settings flags these options set (None: leave to env, config file, default)."""
    return {
        "record": True if record_dir is not None and record is None else record,
        "record_dir": str(record_dir) if record_dir is not None else None,
        "record_full": record_full,
    }


@dataclass
class Recording:
    recorder: Recorder | None = None
    transport: httpx.AsyncBaseTransport | None = None
    replay: ReplayTransport | None = None
    replay_source: Path | None = None
    warnings: tuple[str, ...] = ()

    @property
    def offline(self) -> bool:
        """Every upstream answer comes from the replayed journal: no network, no key."""
        return self.replay is not None and self.replay.miss == ReplayMiss.error.value

    def describe(self, journal: str | None = None) -> list[str]:
        """Lines for the console (stderr) at start; `journal` names what is recorded to
        instead of the recorder's file (the files of `serve --workers`)."""
        lines = list(self.warnings)
        if self.replay is not None:
            lines.append(
                f"upstream replay: {self.replay.size} recorded answers from {self.replay_source}"
                f" for {', '.join(sorted(self.replay.models)) or 'no model'}"
                f" (on a miss: {self.replay.miss})"
            )
        if self.recorder is not None:
            lines.append(f"recording to {journal or self.recorder.path}")
        return lines


def recording(
    settings: Settings,
    *,
    upstream_replay: Path | None = None,
    replay_miss: ReplayMiss | str = ReplayMiss.error,
    replay_timing: bool = False,
    journal_file: Path | None = None,
) -> Recording:
    """The recorder (when the settings say record; writing to `journal_file`, else a new file in
    the journal directory) and the upstream transport (a replay of `upstream_replay` when
    given, else None: the default)."""
    wiring = Recording()
    if upstream_replay is not None:
        journal = load(upstream_replay)
        miss = ReplayMiss(replay_miss)
        forward = pooled_transport(settings) if miss is ReplayMiss.forward else None
        wiring.replay = ReplayTransport(
            journal.records, miss=miss.value, forward=forward, timing=replay_timing
        )
        if wiring.replay.size == 0:
            raise JournalError(f"{upstream_replay}: no recorded upstream answers to replay")
        wiring.transport = wiring.replay
        wiring.replay_source = upstream_replay
        wiring.warnings = tuple(journal.warnings)
    if settings.record:
        wiring.recorder = Recorder.from_settings(settings, path=journal_file)
        wiring.warnings += tuple(wiring.recorder.warnings)
    return wiring
