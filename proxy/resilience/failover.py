"""The failover loop: one exchange tried along its chain of targets and their keys.

The caller gives two steps: `prepare(target)` makes the exchange ready for a target (its
provider profile, model and dialect: translation follows the target used), and
`send(plan, key, lone)` makes one attempt with one key, returning once the upstream's answer
is taken (a 2xx status for a stream: nothing has reached the client yet) or raising its
`BridgeError`. What moves on and where is `policy`'s; this loop keeps the breakers and the
keys told, and writes down every attempt.

A lone target (a chain of one, on an upstream with one key) is always tried, as before
fallback existed: there is nowhere else to go, and failing fast would only hide its
recovery. Its `send` may then retry the same upstream itself (`upstream.py`); in a chain it
must not, or a refusal would be retried twice over.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..core.errors import BridgeError, UpstreamError
from ..core.routing import Target
from .health import Health, UpstreamHealth
from .keys import Key
from .policy import (
    Move,
    Outcome,
    classify,
    larger_target,
    most_telling,
    prompt_tokens,
    retry_after,
)

log = logging.getLogger("claude_bridge.failover")

P = TypeVar("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Attempt:
    """One try (or skip) of one target, for the dashboard, the journal and the logs."""

    upstream: str
    model: str
    key: str
    """The key's name (its variable, or `key N`); never its value."""
    outcome: str
    """`ok`, `failed`, or `skipped` (breaker open, every key resting, not translatable)."""
    offset: float
    """Seconds from the start of the loop to the attempt's start."""
    duration: float = 0.0
    status: int | None = None
    """The status the failure maps to (the client's, had it been the last)."""
    error_type: str | None = None
    error: str | None = None

    def fields(self) -> dict[str, Any]:
        """As plain JSON data, times in milliseconds: for the JSON logs and the journal."""
        return {
            "upstream": self.upstream,
            "model": self.model,
            "key": self.key,
            "outcome": self.outcome,
            "offset_ms": round(self.offset * 1000, 1),
            "ms": round(self.duration * 1000, 1),
            "status": self.status,
            "error_type": self.error_type,
            "error": self.error,
        }


def failed_over(attempts: Sequence[Attempt]) -> bool:
    """More than one attempt, or one that did not answer: worth telling."""
    return len(attempts) > 1 or any(a.outcome != "ok" for a in attempts)


@dataclass(frozen=True)
class Served(Generic[T]):
    result: T
    target: Target


class Failover:
    def __init__(self, health: Health) -> None:
        self.health = health

    def lone(self, chain: Sequence[Target]) -> bool:
        """One target on an upstream with one key: tried as it always was."""
        return len(chain) == 1 and len(self.health[chain[0].upstream].pool.keys) == 1

    async def run(
        self,
        chain: Sequence[Target],
        prepare: Callable[[Target], Awaitable[P]],
        send: Callable[[P, Key, bool], Awaitable[T]],
        *,
        windows: Callable[[Target], int | None],
        attempts: list[Attempt] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Served[T]:
        """The first answer along `chain`. Raises the client's error (`STOP`, a failure of
        the first target's `prepare`, any failure of a lone target) as it is, else the most
        telling failure once every target failed. `windows`: a target's context window, when
        known; `attempts` gets each attempt as it ends; `extra`: for log records."""
        run: _Run[T] = _Run(self.health, self.lone(chain), attempts, extra or {})
        index = 0
        while index < len(chain):
            target = chain[index]
            upstream = self.health[target.upstream]
            if not run.lone and not upstream.breaker.allows():
                wait = upstream.breaker.reopens_at - self.health.clock()
                failing = f"upstream {target.upstream} is skipped: it kept failing"
                run.skip(target, "", _skipped(failing, wait, 529, "overloaded_error"))
                index += 1
                continue
            try:
                plan = await prepare(target)
            except BridgeError as unfit:
                upstream.breaker.release()
                if index == 0:
                    raise
                run.skip(target, "", unfit)
                index += 1
                continue
            ended = await run.keys(target, upstream, plan, send)
            if isinstance(ended, Served):
                return ended
            move, error = ended
            if move is Move.LARGER:
                sizes = [windows(t) for t in chain]
                following = larger_target(sizes, index, prompt_tokens(error))
                if following is None:
                    raise error  # nothing larger is known: the client compacts
                index = following
            else:
                index += 1
        raise most_telling(run.outcomes)


class _Run(Generic[T]):
    """One `Failover.run`: its attempts and failures so far."""

    def __init__(
        self,
        health: Health,
        lone: bool,
        attempts: list[Attempt] | None,
        extra: Mapping[str, Any],
    ) -> None:
        self.clock = health.clock
        self.start = self.clock()
        self.lone = lone
        self.extra = extra
        self.attempts = [] if attempts is None else attempts
        self.outcomes: list[Outcome] = []

    async def keys(
        self,
        target: Target,
        upstream: UpstreamHealth,
        plan: P,
        send: Callable[[P, Key, bool], Awaitable[T]],
    ) -> Served[T] | tuple[Move, BridgeError]:
        """Try `target` with each of its keys that can serve, until one answers or a failure
        calls for more than another key (that move, and the failure)."""
        pool, breaker = upstream.pool, upstream.breaker
        tried: list[Key] = []
        last: BridgeError | None = None
        while True:
            key = pool.keys[0] if self.lone else pool.pick(tried)
            if key is None:
                breaker.release()
                if last is None:  # not one key could be tried
                    now = self.clock()
                    wait = (pool.back_at() or now) - now
                    resting = f"every key of upstream {target.upstream} is rate-limited or refused"
                    last = _skipped(resting, wait, 429, "rate_limit_error")
                    self.skip(target, "", last)
                return Move.TARGET, last
            tried.append(key)
            started = self.clock()
            try:
                result = await send(plan, key, self.lone)
            except BridgeError as error:
                move = classify(error)
                self._account(upstream, key, error, move)
                self._note(target, key.label, started, error, move)
                if move is Move.STOP or self.lone:
                    raise
                if move is not Move.KEY:
                    return move, error
                last = error
            except BaseException:  # cancelled: this attempt says nothing of anyone's health
                breaker.release()
                pool.released(key)
                raise
            else:
                breaker.success()
                pool.succeeded(key)
                self.attempts.append(self._attempt(target, key.label, "ok", started))
                return Served(result, target)

    def skip(self, target: Target, key: str, error: BridgeError) -> None:
        self.outcomes.append(Outcome(error, skipped=True))
        self.attempts.append(self._attempt(target, key, "skipped", self.clock(), error))
        log.info("skipped %s: %s", target, error.message, extra=dict(self.extra))

    def _account(self, upstream: UpstreamHealth, key: Key, error: BridgeError, move: Move) -> None:
        """Tell the breaker and the key how the attempt went."""
        if move is Move.KEY:
            if error.status == 429:
                upstream.pool.rate_limited(key, retry_after(error))
            else:
                upstream.pool.refused(key)
            return  # the upstream itself answered; whether it serves is for the next key
        if move is Move.TARGET:
            upstream.breaker.failure()
            upstream.pool.released(key)
        else:  # it answered, even if not with a reply: it is up, and so is the key
            upstream.breaker.success()
            upstream.pool.succeeded(key)

    def _note(
        self, target: Target, key: str, started: float, error: BridgeError, move: Move
    ) -> None:
        self.outcomes.append(Outcome(error))
        self.attempts.append(self._attempt(target, key, "failed", started, error))
        # A warning when the request moves on; a failure the client gets is its request's.
        moving = move is not Move.STOP and not self.lone
        log.log(
            logging.WARNING if moving else logging.DEBUG,
            "%s (%s) failed after %.0f ms: %s %s%s",
            target,
            key,
            (self.clock() - started) * 1000,
            error.status,
            error.message,
            f"; trying the {move.value}" if moving else "",
            extra=dict(self.extra),
        )

    def _attempt(
        self,
        target: Target,
        key: str,
        outcome: str,
        started: float,
        error: BridgeError | None = None,
    ) -> Attempt:
        return Attempt(
            target.upstream,
            target.model,
            key,
            outcome,
            offset=started - self.start,
            duration=self.clock() - started,
            status=error.status if error is not None else None,
            error_type=error.type if error is not None else None,
            error=error.message if error is not None else None,
        )


def _skipped(message: str, wait: float, status: int, kind: str) -> UpstreamError:
    """A target skipped without a call: what the client hears, if nothing tells more."""
    seconds = f"{max(wait, 1.0):.0f}"
    return UpstreamError(
        f"{message}; tried again in {seconds} s",
        status=status,
        type=kind,
        headers={"retry-after": seconds},
    )
