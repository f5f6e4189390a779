"""An upstream's keys: spread by weight over the healthy ones; a rate-limited key rests.

A key that got a 429 cools down for the `retry-after` the upstream gave (or a backoff that
doubles with each 429 in a row) while the others serve; a key the upstream refused (401, 403,
402) has its breaker tripped, and is probed again after the cooldown. An upstream with one key,
or none, is a pool of one: the same code, no special case.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from .breaker import Breaker, BreakerPolicy

BACKOFF = 2.0
"""Seconds a key rests after a 429 that named no `retry-after`; doubled per 429 in a row..."""
MAX_BACKOFF = 60.0
"""...up to this."""
MAX_RETRY_AFTER = 3600.0
"""A `retry-after` beyond an hour is taken as an hour: the key is probed again then."""


@dataclass(frozen=True)
class KeySpec:
    """A key as configured: the secret, its weight, and the name it is shown by."""

    secret: str
    weight: float = 1.0
    label: str = "key"


@dataclass(eq=False)
class Key:
    """One key's health. `secret` never leaves this object but for the request headers."""

    secret: str = field(repr=False)
    weight: float
    label: str
    breaker: Breaker
    cooling_until: float = 0.0
    strikes: int = 0
    """429s in a row: the backoff's exponent."""


class KeyPool:
    def __init__(
        self,
        specs: Sequence[KeySpec],
        policy: BreakerPolicy,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._clock = clock
        self._rng = rng
        specs = specs or [KeySpec("", label="no key")]
        self.keys = [Key(s.secret, s.weight, s.label, Breaker(policy, clock)) for s in specs]

    def pick(self, tried: Collection[Key] = ()) -> Key | None:
        """A healthy key not in `tried`, drawn by weight (its breaker's probe taken, if it is
        half-open); None when every key is tried, cooling or open."""
        now = self._clock()
        ready = [
            k
            for k in self.keys
            if k not in tried and k.cooling_until <= now and k.breaker.available()
        ]
        if not ready:
            return None
        key = ready[0] if len(ready) == 1 else self._draw(ready)
        key.breaker.allows()
        return key

    def succeeded(self, key: Key) -> None:
        key.strikes = 0
        key.breaker.success()

    def rate_limited(self, key: Key, retry_after: float | None) -> None:
        """A 429: `key` rests for `retry_after` seconds, or the backoff."""
        if retry_after is None:
            retry_after = min(BACKOFF * 2.0**key.strikes, MAX_BACKOFF)
        key.strikes += 1
        key.cooling_until = self._clock() + min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        key.breaker.release()

    def refused(self, key: Key) -> None:
        """The upstream refused the key itself (401, 403, 402): skipped until probed again."""
        key.breaker.trip()

    def released(self, key: Key) -> None:
        """The attempt with `key` said nothing of the key's health."""
        key.breaker.release()

    def back_at(self) -> float | None:
        """When the first key that cannot serve now will (clock seconds); None if one can."""
        now = self._clock()
        waits = []
        for key in self.keys:
            if key.cooling_until <= now and key.breaker.available():
                return None
            opens = key.breaker.reopens_at if key.breaker.state == "open" else now
            waits.append(max(key.cooling_until, opens))
        return min(waits)

    def _draw(self, ready: list[Key]) -> Key:
        return self._rng.choices(ready, weights=[k.weight for k in ready])[0]
