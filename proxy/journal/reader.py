"""Reading journals: one file or a directory of session files, newest record first.

A last line cut short (the writer was killed mid-write) is skipped with a warning; a broken
line anywhere else, or a record from a newer format, is an error naming the file and line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from .records import FormatError, Record, parse_record


class JournalError(OSError):
    """A journal that cannot be read, or a record that cannot be found: an `OSError`, so
    whatever reports unreadable files reports these too (the CLI: one line, exit code 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class Journal:
    records: list[Record] = field(default_factory=list)
    """Newest first."""
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def journal_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob("*.jsonl"))
    if path.is_file():
        return [path]
    raise JournalError(f"{path}: no such journal file or directory")


def read_lines(lines: Sequence[str], source: str) -> Journal:
    journal = Journal()
    last = len(lines) - 1
    while last >= 0 and not lines[last].strip():
        last -= 1
    for number, line in enumerate(lines[: last + 1], start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            if number == last + 1:
                journal.warnings.append(
                    f"{source}: line {number} is cut short ({len(line)} characters), skipped; "
                    "the writer stopped in the middle of a record"
                )
                continue
            raise JournalError(f"{source}:{number}: not a JSON record") from None
        if not isinstance(data, dict):
            raise JournalError(f"{source}:{number}: not a JSON record")
        try:
            journal.records.append(parse_record(data))
        except FormatError as exc:
            raise JournalError(f"{source}:{number}: {exc}") from None
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise JournalError(f"{source}:{number}: {where}: {first['msg']}") from None
    journal.records.reverse()
    return journal


def read_file(path: Path) -> Journal:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise JournalError(f"{path}: {exc.strerror or exc}") from None
    journal = read_lines(text.split("\n"), str(path))
    journal.files.append(path)
    return journal


def load(path: Path) -> Journal:
    """Every record under `path` (a file or a directory of them), newest first."""
    merged = Journal()
    for file in journal_files(path):
        journal = read_file(file)
        merged.records.extend(journal.records)
        merged.warnings.extend(journal.warnings)
        merged.files.append(file)
    merged.records.sort(key=lambda r: r.id, reverse=True)
    return merged


def find(records: Iterable[Record], ref: str) -> Record:
    """The record whose id starts with `ref` (any case), or whose request id is `ref` or ends
    with it: the dashboard and the request lines show the end of the request id, so every id
    `serve` shows is taken here."""
    wanted = ref.strip()
    if not wanted:
        raise JournalError("no exchange id given")
    matches = [
        r
        for r in records
        if r.id.upper().startswith(wanted.upper())
        or (r.request_id and r.request_id.endswith(wanted))
    ]
    if not matches:
        raise JournalError(f"no recorded exchange {ref!r}")
    ids = {r.id for r in matches}
    if len(ids) > 1:
        shown = ", ".join(sorted(ids)[:5])
        raise JournalError(f"{ref!r} matches {len(ids)} exchanges ({shown}): give more of the id")
    return matches[0]


# -- browsing ------------------------------------------------------------------------------

_STATUS_HELP = "use ok, error, incomplete, a status such as 429, or a class such as 5xx"


def status_matches(record: Record, wanted: str) -> bool:
    """`ok`, `error`, `incomplete`, an exact status (`429`) or a class (`4xx`)."""
    wanted = wanted.strip().lower()
    status = record.status or 0
    failed = record.error is not None or status >= 400
    if wanted == "ok":
        return record.state == "complete" and not failed
    if wanted == "error":
        return failed
    if wanted == "incomplete":
        return record.state == "incomplete"
    if wanted.isdigit():
        return status == int(wanted)
    if len(wanted) == 3 and wanted[0].isdigit() and wanted[1:] == "xx":
        return status // 100 == int(wanted[0])
    raise JournalError(f"status filter {wanted!r}: {_STATUS_HELP}")


# Claude Code wraps what it adds to a user turn (context, reminders) in these tags.
_REMINDER = re.compile(r"<system-reminder>.*?(</system-reminder>|$)", re.S)


def prompt_text(record: Record) -> str:
    """What the user last typed: what `replay list` shows of a request. The newest user turn
    with words of its own (a tool loop's turns carry only tool results), without the
    `<system-reminder>` blocks Claude Code adds; else what the last user turn holds."""
    body = record.client.body
    messages = body.get("messages") if isinstance(body, dict) else None
    users = [
        m
        for m in (messages if isinstance(messages, list) else [])
        if isinstance(m, dict) and m.get("role") == "user"
    ]
    for message in reversed(users):
        words = _REMINDER.sub(" ", " ".join(_texts(message.get("content")))).strip()
        if words:
            return words
    if users:
        content = users[-1].get("content")
        blocks = content if isinstance(content, list) else []
        return " ".join(f"[{b.get('type', '')}]" for b in blocks if isinstance(b, dict))
    return record.client.body_text or ""


def _texts(content: object) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)]


def reply_text(record: Record) -> str:
    reply = record.reply
    if reply is None:
        return ""
    if isinstance(reply.body, dict):
        content = reply.body.get("content")
        if isinstance(content, list):
            return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
        error = reply.body.get("error")
        return str(error.get("message", "")) if isinstance(error, dict) else ""
    parts: list[str] = []
    for _, event in reply.events or []:
        delta = event.get("delta")
        if isinstance(delta, dict):
            parts.append(str(delta.get("text") or delta.get("partial_json") or ""))
    return "".join(parts)


def select(
    records: Iterable[Record],
    *,
    model: str | None = None,
    status: str | None = None,
    text: str | None = None,
    session: str | None = None,
) -> list[Record]:
    """The records matching every filter given: model (either side, a substring), status
    (`status_matches`), text (in the request's messages or the reply), session (an id or its
    start, as the dashboard shows it), all case-insensitive."""
    chosen: list[Record] = []
    for record in records:
        if session and not (record.session_id or "").lower().startswith(session.lower()):
            continue
        if model:
            names = f"{record.routing.client_model}\n{record.routing.upstream_model}".lower()
            if model.lower() not in names:
                continue
        if status and not status_matches(record, status):
            continue
        if text:
            haystack = json.dumps(record.client.body, ensure_ascii=False) + reply_text(record)
            if text.lower() not in haystack.lower():
                continue
        chosen.append(record)
    return chosen
