"""Which failures move a request on, where to, and what the client hears when all fail.

Pure: an attempt's error in, a decision out. Nothing moves on once a byte reached the client
(after that only an SSE `error` event is possible): the failover loop spans an attempt up to
the upstream's answer (its status, for a stream), before anything is sent, and never after.
Nor on the client's own mistakes (an invalid request, 413): another upstream would refuse it
as well.

==========================================  ===============================================
failure (as `upstream.py` maps it)          what comes next
==========================================  ===============================================
429 rate limit                              the key rests; the next key, then the next target
401/403 (502 "refused the API key"), 402    the key is tripped; the next key, then target
connect error, timeout before the answer,   the upstream's breaker counts it; the next
500/502/503/504/529                         target (its other keys would fare no better)
context too long                            the next target with a larger window, if known
anything else                               none: the client gets it
==========================================  ===============================================
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from ..core.errors import BridgeError, UpstreamError


class Move(Enum):
    KEY = "next key"
    """The key failed (rate limit, refused): another key of this target, else the next."""
    TARGET = "next target"
    """The upstream failed: the next target."""
    LARGER = "larger window"
    """The prompt does not fit: the next target with a larger context window."""
    STOP = "stop"
    """The client gets this failure."""


_OVERFLOWS = ("prompt is too long", "input length and `max_tokens` exceed context limit")
_SIZES = re.compile(r"prompt is too long: (\d+) tokens > (\d+) maximum")
_LIMIT_SUM = re.compile(r"exceed context limit: (\d+) \+ (\d+) > (\d+)")
_OWN_OVERLOAD = "claude-bridge is overloaded"
"""`upstream.py`'s 529 for its own connection pool staying full: not the upstream's fault."""


def classify(error: BridgeError) -> Move:
    """What `error`, from one attempt before its answer reached the client, calls for."""
    if not isinstance(error, UpstreamError):
        return Move.STOP
    status, kind = error.status, error.type
    if status == 400 and error.message.startswith(_OVERFLOWS):
        return Move.LARGER
    if status == 429 or kind == "billing_error" or is_key_refused(error):
        return Move.KEY
    if error.message.startswith(_OWN_OVERLOAD):
        return Move.STOP
    if status >= 500:
        return Move.TARGET
    return Move.STOP


def is_key_refused(error: BridgeError) -> bool:
    """`core.errors.key_refused`'s 502: the upstream turned the key down."""
    return error.status == 502 and "refused the API key" in error.message


def prompt_tokens(error: BridgeError) -> int | None:
    """The tokens a context overflow says the request needs, when it says."""
    sizes = _SIZES.search(error.message)
    if sizes:
        return int(sizes.group(1))
    summed = _LIMIT_SUM.search(error.message)
    return int(summed.group(1)) + int(summed.group(2)) if summed else None


def larger_target(windows: Sequence[int | None], failed: int, needed: int | None) -> int | None:
    """After target `failed` found the prompt too long: the index of the next target whose
    window (`windows`, by target; None: unknown) is known and larger than what the prompt
    needs, or than the failed target's window; None when nothing tells that one would fit."""
    known = [n for n in (needed, windows[failed]) if n is not None]
    if not known:
        return None
    floor = max(known)
    return next((i for i in range(failed + 1, len(windows)) if (windows[i] or 0) > floor), None)


def retry_after(error: BridgeError) -> float | None:
    """The seconds an error's `retry-after` (or `retry-after-ms`) asks for; None if it asks
    none, or gives an HTTP date (rare from an API: the backoff does)."""
    headers = {k.lower(): v for k, v in error.headers.items()}
    try:
        if "retry-after-ms" in headers:
            return max(float(headers["retry-after-ms"]) / 1000, 0.0)
        if "retry-after" in headers:
            return max(float(headers["retry-after"]), 0.0)
    except ValueError:
        return None
    return None


def _place(error: BridgeError) -> int:
    """Most telling first: what the client can act on (compact, wait, fix a key) before what
    only says "it did not work"."""
    tests = (
        error.message.startswith(_OVERFLOWS),
        error.status == 429,
        error.type == "billing_error" or is_key_refused(error),
        error.status == 529,
        error.status == 504,
    )
    return next((place for place, found in enumerate(tests) if found), len(tests))


@dataclass(frozen=True)
class Outcome:
    """One target's failure, as the loop saw it (attempted, or skipped while open)."""

    error: BridgeError
    skipped: bool = False


def most_telling(outcomes: Sequence[Outcome]) -> BridgeError:
    """The error the client gets when every target failed: the most telling one (attempts
    before skips, then by `_RANK`, then the first), with the soonest `retry-after` any of
    them gave."""
    assert outcomes, "a chain of no targets cannot fail"

    def rank(indexed: tuple[int, Outcome]) -> tuple[bool, int, int]:
        index, outcome = indexed
        return outcome.skipped, _place(outcome.error), index

    chosen = min(enumerate(outcomes), key=rank)[1].error
    waits = [w for w in (retry_after(o.error) for o in outcomes) if w is not None]
    if not waits:
        return chosen
    headers = {k: v for k, v in chosen.headers.items() if not k.lower().startswith("retry-after")}
    headers["retry-after"] = str(max(1, round(min(waits))))
    return type(chosen)(chosen.message, status=chosen.status, type=chosen.type, headers=headers)
