"""Every upstream's breaker and key pool, built from the settings, and a report of them.

One `Health` per app: the state outlives requests (a breaker opened by one request is
skipped by the next). The report is plain data in seconds from now, for the dashboard,
`GET /` and tests; keys appear by the name of the variable they came from, else by number,
never by value.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Settings, UpstreamSettings
from .breaker import Breaker, BreakerPolicy
from .keys import KeyPool, KeySpec


@dataclass(eq=False)
class UpstreamHealth:
    name: str
    breaker: Breaker
    pool: KeyPool


@dataclass(frozen=True)
class KeyReport:
    label: str
    state: str
    """`ok`, `cooling` (after a 429), `open` (refused), `half-open` (being probed)."""
    until: float | None = None
    """Seconds until it serves again (cooling, open)."""


@dataclass(frozen=True)
class UpstreamReport:
    name: str
    state: str
    """`ok`, `open`, `half-open`."""
    until: float | None
    keys: tuple[KeyReport, ...]


class Health:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        policy: BreakerPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        policy = policy or BreakerPolicy()
        rng = rng or random.Random()
        self.upstreams = {
            name: UpstreamHealth(
                name, Breaker(policy, clock), KeyPool(key_specs(endpoint), policy, clock, rng)
            )
            for name, endpoint in settings.endpoints().items()
        }

    def __getitem__(self, name: str) -> UpstreamHealth:
        return self.upstreams[name]

    def report(self) -> list[UpstreamReport]:
        now = self.clock()
        reports = []
        for upstream in self.upstreams.values():
            breaker = upstream.breaker
            keys = []
            for key in upstream.pool.keys:
                if key.breaker.state != "closed":
                    until = key.breaker.reopens_at if key.breaker.state == "open" else None
                    keys.append(KeyReport(key.label, key.breaker.state, _left(until, now)))
                elif key.cooling_until > now:
                    keys.append(KeyReport(key.label, "cooling", key.cooling_until - now))
                else:
                    keys.append(KeyReport(key.label, "ok"))
            state = "ok" if breaker.state == "closed" else breaker.state
            until = breaker.reopens_at if breaker.state == "open" else None
            reports.append(UpstreamReport(upstream.name, state, _left(until, now), tuple(keys)))
        return reports


def key_specs(endpoint: UpstreamSettings) -> list[KeySpec]:
    """An upstream's keys as the pool takes them, named by their variable or their place."""
    pool = endpoint.pool()
    return [
        KeySpec(
            key.key.get_secret_value(),
            key.weight,
            key.env or ("key" if len(pool) == 1 else f"key {number}"),
        )
        for number, key in enumerate(pool, 1)
    ]


def _left(until: float | None, now: float) -> float | None:
    return None if until is None else max(until - now, 0.0)
