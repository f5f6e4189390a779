"""`heap.settle`: the collector set once per process when an app starts."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
from claude_bridge.proxy import heap
default = gc.get_threshold()
heap.settle()
frozen = gc.get_freeze_count()
assert frozen > 0, frozen
assert gc.get_threshold() == (heap.YOUNG, default[1], default[2]), gc.get_threshold()
kept = [[] for _ in range(10)]  # new containers: a second freeze would take them
heap.settle()  # a second app in the same process: nothing frozen again
assert gc.get_freeze_count() == frozen
print("ok")
"""


def test_start_up_is_frozen_and_the_young_threshold_raised_once() -> None:
    # Its own process: freezing is for the process's life.
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr
