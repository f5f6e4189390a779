"""A ~100k-token Claude Code session body, generated deterministically for the benchmarks.

    .venv/bin/python bench/session.py [--reads 40] > body.json

The shape is a real session's (`data/claude_code_50k.anthropic.json`, captured from Claude Code
2.1: its system blocks, 12 tools, metadata, thinking and context management), carried on for
`reads` rounds of what an agent does most: the assistant thinks a line, says a line and calls
`Read`; the user turn brings the file back as Claude Code does (`cat -n` numbering with an
arrow, a few hundred lines of Python) and now and then a `<system-reminder>`. With 40 reads it
is about 480 KB, ~100k tokens at Anthropic's rough four characters a token.

The files are made up from a fixed seed, so every run posts the same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEED_BODY = Path(__file__).resolve().parent / "data" / "claude_code_50k.anthropic.json"
READS = 40
LINES_PER_FILE = (160, 215)
_NAMES = (
    "session", "request", "handler", "config", "record", "stream", "client", "upstream",
    "message", "token", "window", "route", "reply", "event", "journal", "worker",
)  # fmt: skip
_TYPES = ("str", "int", "bytes", "dict[str, Any]", "list[str]", "float | None", "bool")
_VERBS = ("load", "parse", "send", "close", "check", "build", "count", "merge", "find", "drop")


def _line(rng: random.Random, indent: int) -> str:
    """One plausible line of Python."""
    name, other = rng.choice(_NAMES), rng.choice(_NAMES)
    verb = rng.choice(_VERBS)
    pad = "    " * indent
    shapes: tuple[Callable[[], str], ...] = (
        lambda: f"{name} = self.{verb}_{other}({other}, timeout={rng.randrange(1, 60)})",
        lambda: f"if {name} is None or not {name}.{verb}():",
        lambda: f'log.debug("{verb} %s for %s", {name}, {other}.id)',
        lambda: f"for {name} in sorted({other}s, key=lambda item: item.{verb}_at):",
        lambda: f"return {{{name!r}: {other}.{verb}(), 'size': len({name})}}",
        lambda: f"# {verb.capitalize()} the {name} before its {other}: see {other}.py.",
        lambda: f"{name}: {rng.choice(_TYPES)} = {other}.get({verb!r}, {rng.randrange(100)})",
    )
    shape = rng.randrange(8)
    return pad + shapes[shape]() if shape < len(shapes) else ""


def _source(rng: random.Random, path: str) -> str:
    """A made-up Python module, as `Read` returns it: numbered lines, an arrow after each."""
    lines = [f'"""{path.rsplit("/", 1)[-1]}: part of the service."""', ""]
    lines += ["from __future__ import annotations", "", "import logging", ""]
    length = rng.randrange(*LINES_PER_FILE)
    while len(lines) < length:
        name = rng.choice(_NAMES)
        lines += ["", f"def {rng.choice(_VERBS)}_{name}({name}: {rng.choice(_TYPES)}) -> None:"]
        lines.append(f'    """{rng.choice(_VERBS).capitalize()} the {name}, once."""')
        lines += [_line(rng, 1 + rng.randrange(2)) for _ in range(rng.randrange(6, 18))]
    return "\n".join(f"{number:>6}\u2192{text}" for number, text in enumerate(lines, 1))


def _tool_id(rng: random.Random) -> str:
    alphabet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    return "toolu_01" + "".join(rng.choice(alphabet) for _ in range(22))


def session_body(reads: int = READS, seed: int = 18) -> dict[str, Any]:
    """The captured session's first turn, then `reads` Read round trips; ends on a user turn."""
    rng = random.Random(seed)
    base = json.loads(SEED_BODY.read_text())
    messages: list[dict[str, Any]] = [base["messages"][0]]
    for number in range(reads):
        path = f"/home/dev/app/app/{rng.choice(_NAMES)}_{number}.py"
        call = _tool_id(rng)
        signature = f"cb1.{rng.getrandbits(256):064x}"
        thought = (
            f"I need to see where {path} does {rng.choice(_VERBS)} on the {rng.choice(_NAMES)}."
        )
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": thought, "signature": signature},
                    {"type": "text", "text": f"Let me read `{path}`."},
                    {"type": "tool_use", "id": call, "name": "Read", "input": {"file_path": path}},
                ],
            }
        )  # fmt: skip
        result: list[dict[str, Any]] = [
            {"type": "tool_result", "tool_use_id": call, "content": _source(rng, path)}
        ]
        if number % 8 == 7:
            reminder = (
                "<system-reminder>The TodoWrite tool hasn't been used recently.</system-reminder>"
            )
            result.append({"type": "text", "text": reminder})
        messages.append({"role": "user", "content": result})
    messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return {**base, "messages": messages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reads", type=int, default=READS)
    args = parser.parse_args()
    body = session_body(args.reads)
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    print(text)
    print(f"{len(text.encode()):,} bytes, {len(body['messages'])} messages", file=sys.stderr)


if __name__ == "__main__":
    main()
