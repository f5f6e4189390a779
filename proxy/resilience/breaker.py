"""A circuit breaker: stop sending to what keeps failing, and find out when it is back.

States::

    closed --(N failures in a row, or a failure rate over a window)--> open
    open --(cooldown passed)--> half-open: one probe goes through, the others are skipped
    half-open --(the probe succeeds)--> closed
    half-open --(the probe fails)--> open again, for another cooldown

An open breaker is skipped at once, instead of costing the request a timeout. The clock is
passed in (monotonic seconds), so tests move time instead of sleeping.

pybreaker, aiobreaker and purgatory were considered: all three read the wall clock themselves
(`datetime.now`, `time.time`), count consecutive failures only (no failure rate over a window),
and wrap a call, where an exchange needs "may I?" before the upstream answers and "it went so"
after the status, with a stream still open. This module is that, and no more.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half-open"]

MAX_OUTCOMES = 1000
"""Outcomes kept for the failure rate: a window this busy has said enough."""


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open. The defaults suit one developer's
    traffic: a few requests a minute, where three failures in a row already say "down"."""

    failures: int = 3
    """Consecutive failures that open it."""
    rate: float = 0.5
    """A failure rate at or above this, over `window` seconds, opens it..."""
    window: float = 60.0
    min_calls: int = 8
    """...once the window holds at least this many outcomes."""
    cooldown: float = 30.0
    """Seconds open before a probe is let through."""


class Breaker:
    """One upstream's (or one key's) breaker. `allows()` before an attempt; `success()`,
    `failure()` or `release()` after it (the latter when the attempt told nothing: the
    client's own error, a cancellation)."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self._state: State = "closed"
        self._streak = 0
        self._outcomes: deque[tuple[float, bool]] = deque(maxlen=MAX_OUTCOMES)
        self._opened_at = 0.0
        self._probe_at: float | None = None
        """When the half-open probe went out; None while none is out."""

    @property
    def state(self) -> State:
        """What the next `allows()` would find (an open breaker past its cooldown is
        half-open), without taking the probe."""
        if self._state == "open" and self._clock() >= self.reopens_at:
            return "half-open"
        return self._state

    @property
    def reopens_at(self) -> float:
        """When an open breaker lets a probe through (clock seconds)."""
        return self._opened_at + self.policy.cooldown

    def available(self) -> bool:
        """Whether `allows()` would say yes, without taking the probe."""
        state = self.state
        return state == "closed" or (state == "half-open" and not self._probing())

    def allows(self) -> bool:
        """May an attempt go? In half-open, the first caller gets the probe."""
        if not self.available():
            return False
        if self.state == "half-open":
            self._state = "half-open"
            self._probe_at = self._clock()
        return True

    def success(self) -> None:
        self._record(True)
        self._streak = 0
        if self._state != "closed":
            self._state, self._probe_at = "closed", None
            self._outcomes.clear()  # what failed before it opened says nothing now

    def failure(self) -> None:
        self._record(False)
        self._streak += 1
        if self._state == "half-open" or self._tripped():
            self.trip()

    def trip(self) -> None:
        """Open now, whatever the counts (a key the upstream refused)."""
        self._state, self._probe_at = "open", None
        self._opened_at = self._clock()

    def release(self) -> None:
        """The attempt told nothing about health: a probe it held may go to the next caller."""
        self._probe_at = None

    def _record(self, ok: bool) -> None:
        now = self._clock()
        self._outcomes.append((now, ok))
        while self._outcomes and self._outcomes[0][0] < now - self.policy.window:
            self._outcomes.popleft()

    def _tripped(self) -> bool:
        policy = self.policy
        if self._streak >= policy.failures:
            return True
        calls = len(self._outcomes)
        failed = sum(1 for _, ok in self._outcomes if not ok)
        return calls >= policy.min_calls and failed / calls >= policy.rate

    def _probing(self) -> bool:
        # A probe that never reported (its task died) must not hold the breaker half-open
        # for good: after a cooldown another caller may probe.
        return self._probe_at is not None and self._clock() < self._probe_at + self.policy.cooldown
