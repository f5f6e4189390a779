"""The garbage collector, set for a server whose requests are big object graphs freed at once.

A Claude Code session body of ~480 KB becomes some ten thousand containers (parsed JSON,
pydantic models, the translated body), all freed by reference counting when the request ends.
With CPython's default thresholds (a collection every 700 net new containers) preparing one
such request ran ~2 young collections and, every few requests, a full one over the whole heap
(imports, pydantic's schemas, the tokenizer): tens of ms at the 99th percentile
(`bench/agent.py`). With the first threshold at 10,000 they no longer run during a request;
the objects alive once the app has started are frozen, so a full collection, when one comes,
no longer walks them.
"""

from __future__ import annotations

import gc

YOUNG = 10_000
"""Net new containers between two young collections (CPython's default: 700)."""
_settled = False


def settle() -> None:
    """Freeze what start-up made and raise the young threshold; once per process (an app
    started again in the same process, as tests do, must not freeze its predecessor's garbage
    again and again)."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)
