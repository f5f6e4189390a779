"""What checking a client body costs, on a ~500 KB Claude Code-like request (issue 13).

    .venv/bin/python bench/client_input.py [--kb 500] [--repeat 200]

The body is `bench/data/claude_code_50k.anthropic.json` with its tool loop repeated (fresh
tool ids, some non-ASCII text in every turn) until it reaches `--kb`. Printed, best of
`--repeat` runs, in ms:

* `json.loads` of the raw bytes, which the proxy needs anyway;
* `scan`: the one pass over the parsed body for nesting depth and lone surrogates in every
  string and key (`validation._scan`), on the body as Claude Code writes it (raw UTF-8) and as
  an ASCII-escaping client writes it (emoji as `\\ud83d\\ude00` pairs);
* `validate`: the pydantic models, tool pairing and base64 checks included;
* the base64 check alone, per MB of image data;
* `_find_surrogate`, the slow path that names the field, paid only by a refused body.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from claude_bridge.proxy.core import validation
from claude_bridge.proxy.models.anthropic import MessagesRequest, _base64

CC50K = Path(__file__).resolve().parent / "data" / "claude_code_50k.anthropic.json"
EXTRA_TEXT = " ✓ done — 테스트 🎉"


def claude_code_body(kb: int) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(CC50K.read_bytes())
    head, loop = body["messages"][:2], body["messages"][2:]  # the loop starts with a call
    messages = list(head)
    round_ = 0
    while len(json.dumps(messages, ensure_ascii=False)) < kb * 1000 - 45_000:
        for message in copy.deepcopy(loop):
            for block in message["content"]:
                for key in ("id", "tool_use_id"):
                    if key in block:
                        block[key] += f"r{round_}"
                if block.get("type") == "text":
                    block["text"] += EXTRA_TEXT
            messages.append(message)
        round_ += 1
    return {**body, "messages": messages}


def best_ms(run: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()

    body = claude_code_body(args.kb)
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    escaped = json.dumps(body, separators=(",", ":")).encode()
    data, data_escaped = json.loads(raw), json.loads(escaped)
    last = raw.rfind(EXTRA_TEXT.encode())  # the worst case: the last string
    refused = json.loads(raw[:last] + b"\\ud800" + raw[last + len(EXTRA_TEXT.encode()) :])
    image = base64.b64encode(os.urandom(3 * 1024 * 1024 // 4)).decode()  # 1 MB of base64

    print(f"body: {len(raw) / 1000:.0f} KB, {len(body['messages'])} messages")
    rows = [
        ("json.loads (paid anyway)", lambda: json.loads(raw)),
        ("scan, raw UTF-8 body", lambda: validation._scan(data)),
        ("scan, ASCII-escaped body", lambda: validation._scan(data_escaped)),
        ("validate (models, pairing)", lambda: validation.validate(data, MessagesRequest)),
        ("base64 check, per MB", lambda: _base64(image, _NoContext())),
        ("naming a refused field", lambda: validation._where_surrogate(refused)),
    ]
    for name, run in rows:
        repeat = args.repeat if "validate" not in name else max(args.repeat // 10, 5)
        print(f"  {name:<28} {best_ms(run, repeat):7.3f} ms")


class _NoContext:
    """Stands in for pydantic's `ValidationInfo` when calling the validator directly."""

    context = None


if __name__ == "__main__":
    main()
