"""Breakers, key pools and the failover policy, on an injected clock (no sleeps)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from claude_bridge.proxy.config import Settings
from claude_bridge.proxy.core.errors import InvalidRequest, UpstreamError, key_refused
from claude_bridge.proxy.core.routing import Target
from claude_bridge.proxy.resilience.breaker import Breaker, BreakerPolicy
from claude_bridge.proxy.resilience.failover import Attempt, Failover
from claude_bridge.proxy.resilience.health import Health
from claude_bridge.proxy.resilience.keys import Key, KeyPool, KeySpec
from claude_bridge.proxy.resilience.policy import (
    Move,
    Outcome,
    classify,
    larger_target,
    most_telling,
    prompt_tokens,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POLICY = BreakerPolicy(failures=3, rate=0.5, window=60.0, min_calls=8, cooldown=30.0)


# -- the breaker ---------------------------------------------------------------------------


def test_opens_after_consecutive_failures_and_is_skipped() -> None:
    clock = Clock()
    breaker = Breaker(POLICY, clock)
    for _ in range(2):
        assert breaker.allows()
        breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"
    assert not breaker.allows()
    clock.now += 29.9
    assert not breaker.allows()


def test_a_success_resets_the_streak() -> None:
    breaker = Breaker(POLICY, Clock())
    for _ in range(5):
        breaker.failure()
        breaker.failure()
        breaker.success()
    assert breaker.state == "closed"


def test_opens_on_a_failure_rate_over_the_window() -> None:
    clock = Clock()
    breaker = Breaker(POLICY, clock)
    for _ in range(4):  # 50 % failures, never 3 in a row
        breaker.success()
        clock.now += 1
        breaker.failure()
        clock.now += 1
    assert breaker.state == "open"


def test_old_outcomes_leave_the_window() -> None:
    clock = Clock()
    breaker = Breaker(POLICY, clock)
    for _ in range(3):
        breaker.failure()
        breaker.success()
    clock.now += 61  # those six are out of the window
    for _ in range(2):
        breaker.success()
        breaker.failure()
    assert breaker.state == "closed"


def test_half_open_lets_one_probe_through_then_closes() -> None:
    clock = Clock()
    breaker = Breaker(POLICY, clock)
    breaker.trip()
    clock.now += 30
    assert breaker.state == "half-open"
    assert breaker.allows()  # the probe
    assert not breaker.allows()  # everyone else still skips it
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.allows() and breaker.allows()


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    clock = Clock()
    breaker = Breaker(POLICY, clock)
    breaker.trip()
    clock.now += 30
    assert breaker.allows()
    breaker.failure()
    assert breaker.state == "open"
    clock.now += 29
    assert not breaker.allows()
    clock.now += 1
    assert breaker.allows()


def test_a_released_or_lost_probe_frees_the_slot() -> None:
    clock = Clock()
    breaker = Breaker(POLICY, clock)
    breaker.trip()
    clock.now += 30
    assert breaker.allows()
    breaker.release()  # the attempt told nothing (the client left)
    assert breaker.allows()
    clock.now += 30  # that probe never reported at all
    assert breaker.allows()


# -- keys ----------------------------------------------------------------------------------


def pool(clock: Clock, *weights: float, seed: int = 1) -> KeyPool:
    specs = [KeySpec(f"sk-{i}", w, f"K{i}") for i, w in enumerate(weights, 1)]
    return KeyPool(specs, POLICY, clock, random.Random(seed))


def test_requests_spread_over_keys_by_weight() -> None:
    keys = pool(Clock(), 1, 3)
    drawn = Counter(keys.pick().label for _ in range(4000))  # type: ignore[union-attr]
    assert 0.7 < drawn["K2"] / 4000 < 0.8


def test_a_rate_limited_key_rests_for_its_retry_after() -> None:
    clock = Clock()
    keys = pool(clock, 1, 1)
    first = keys.keys[0]
    keys.rate_limited(first, 20.0)
    assert {keys.pick().label for _ in range(50)} == {"K2"}  # type: ignore[union-attr]
    clock.now += 20
    assert {keys.pick().label for _ in range(200)} == {"K1", "K2"}  # type: ignore[union-attr]


def test_without_retry_after_the_rest_doubles() -> None:
    clock = Clock()
    keys = pool(clock, 1)
    key = keys.keys[0]
    rests = []
    for _ in range(4):
        keys.rate_limited(key, None)
        rests.append(key.cooling_until - clock.now)
    assert rests == [2.0, 4.0, 8.0, 16.0]
    keys.succeeded(key)
    keys.rate_limited(key, None)
    assert key.cooling_until - clock.now == 2.0


def test_every_key_resting_picks_none_and_says_when() -> None:
    clock = Clock()
    keys = pool(clock, 1, 1)
    keys.rate_limited(keys.keys[0], 12.0)
    keys.refused(keys.keys[1])  # open for the 30 s cooldown
    assert keys.pick() is None
    assert keys.back_at() == clock.now + 12.0
    assert keys.pick(tried=[keys.keys[0]]) is None


def test_a_refused_key_is_probed_after_the_cooldown() -> None:
    clock = Clock()
    keys = pool(clock, 1, 1)
    keys.refused(keys.keys[0])
    assert {keys.pick().label for _ in range(20)} == {"K2"}  # type: ignore[union-attr]
    clock.now += 30
    tried: list[Key] = [keys.keys[1]]
    assert keys.pick(tried) is keys.keys[0]  # the probe
    assert keys.pick(tried) is None  # one probe at a time


# -- the policy ----------------------------------------------------------------------------


def upstream_error(
    status: int, type: str = "api_error", message: str = "x", **headers: str
) -> UpstreamError:
    return UpstreamError(message, status=status, type=type, headers=headers)


@pytest.mark.parametrize(
    ("error", "move"),
    [
        (upstream_error(429, "rate_limit_error"), Move.KEY),
        (upstream_error(402, "billing_error"), Move.KEY),
        (key_refused(401, "bad key", "h"), Move.KEY),
        (upstream_error(500, message="could not connect to upstream h: refused"), Move.TARGET),
        (upstream_error(504, "timeout_error", "timed out waiting for upstream h"), Move.TARGET),
        (upstream_error(529, "overloaded_error"), Move.TARGET),
        (upstream_error(502, message="upstream h answered HTTP 302, a redirect"), Move.TARGET),
        (
            upstream_error(
                400, "invalid_request_error", "prompt is too long: 9000 tokens > 8192 maximum"
            ),
            Move.LARGER,
        ),
        (upstream_error(400, "invalid_request_error", "messages: bad role"), Move.STOP),
        (upstream_error(413, "request_too_large"), Move.STOP),
        (upstream_error(404, "not_found_error"), Move.STOP),
        (upstream_error(529, "overloaded_error", "claude-bridge is overloaded: pool"), Move.STOP),
        (InvalidRequest("messages: empty"), Move.STOP),
    ],
)
def test_which_failures_move_on(error: UpstreamError, move: Move) -> None:
    assert classify(error) is move


def test_a_context_overflow_goes_to_a_larger_known_window() -> None:
    overflow = upstream_error(400, message="prompt is too long: 9000 tokens > 8192 maximum")
    assert prompt_tokens(overflow) == 9000
    windows = [8192, 4096, None, 16384, 32768]
    assert larger_target(windows, 0, 9000) == 3
    assert larger_target(windows, 0, 20000) == 4
    assert larger_target(windows, 3, None) == 4
    assert larger_target([None, 32768], 0, None) is None  # nothing says it would fit
    assert larger_target(windows, 4, 40000) is None


def test_the_most_telling_failure_wins_with_the_soonest_retry_after() -> None:
    refused = upstream_error(500, message="could not connect")
    limited = upstream_error(429, "rate_limit_error", "slow down", **{"retry-after": "20"})
    skipped = upstream_error(529, "overloaded_error", "skipped", **{"retry-after": "7"})
    chosen = most_telling([Outcome(refused), Outcome(limited), Outcome(skipped, skipped=True)])
    assert (chosen.status, chosen.message) == (429, "slow down")
    assert chosen.headers["retry-after"] == "7"
    only = most_telling([Outcome(refused), Outcome(upstream_error(503))])
    assert only is refused  # no retry-after anywhere: the first, untouched


# -- the loop ------------------------------------------------------------------------------


def two_upstreams(**keys: object) -> Settings:
    return Settings.model_validate(
        {
            "openai_base_url": "http://127.0.0.1:9/v1",
            "openai_api_key": "sk-default-key-0000",
            "upstreams": {
                "b": {"base_url": "http://127.0.0.1:10/v1", **keys},
            },
        }
    )


CHAIN = (Target("default", "m1"), Target("b", "m2"))


class Script:
    """`send` for the loop: each call answers with the next of `replies` (an error raises)."""

    def __init__(self, *replies: object) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[str, str, bool]] = []

    async def prepare(self, target: Target) -> Target:
        return target

    async def send(self, plan: Target, key: Key, lone: bool) -> str:
        self.calls.append((str(plan), key.label, lone))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return str(reply)


def run(
    failover: Failover, script: Script, chain: tuple[Target, ...] = CHAIN, **kw: object
) -> object:
    async def go() -> object:
        return await failover.run(
            chain,
            script.prepare,
            script.send,
            windows=lambda t: None,
            **kw,  # type: ignore[arg-type]
        )

    return asyncio.run(go())


def test_a_429_moves_to_the_next_target_and_the_breaker_skips_a_dead_one() -> None:
    clock = Clock()
    failover = Failover(Health(two_upstreams(), clock=clock))
    attempts: list[Attempt] = []
    limited = upstream_error(429, "rate_limit_error", **{"retry-after": "5"})
    served = run(failover, Script(limited, "hi"), attempts=attempts)
    assert served.result == "hi" and served.target == CHAIN[1]  # type: ignore[attr-defined]
    assert [(a.upstream, a.outcome, a.status) for a in attempts] == [
        ("default", "failed", 429),
        ("b", "ok", None),
    ]
    # The default key rests 5 s: the next request goes straight to b.
    script = Script("again")
    run(failover, script)
    assert [c[0] for c in script.calls] == ["b:m2"]
    clock.now += 5
    down = upstream_error(500, message="could not connect")
    for _ in range(3):
        run(failover, Script(down, "ok"))
    script = Script("skipped the dead one")
    run(failover, script)
    assert [c[0] for c in script.calls] == ["b:m2"]
    assert failover.health["default"].breaker.state == "open"


def test_keys_are_tried_before_the_next_target() -> None:
    failover = Failover(Health(two_upstreams(api_keys=["sk-b1-aaaa", "sk-b2-bbbb"]), clock=Clock()))
    limited = upstream_error(429, "rate_limit_error")
    script = Script(upstream_error(503, "overloaded_error"), limited, "second key")
    served = run(failover, script)
    assert served.result == "second key"  # type: ignore[attr-defined]
    assert [c[0] for c in script.calls] == ["default:m1", "b:m2", "b:m2"]
    assert {script.calls[1][1], script.calls[2][1]} == {"key 1", "key 2"}


def test_the_client_error_is_never_tried_elsewhere() -> None:
    failover = Failover(Health(two_upstreams(), clock=Clock()))
    bad = upstream_error(400, "invalid_request_error", "messages.0: unknown role")
    script = Script(bad)
    with pytest.raises(UpstreamError) as raised:
        run(failover, script)
    assert raised.value is bad and len(script.calls) == 1


def test_when_all_fail_the_client_gets_the_most_telling_failure() -> None:
    failover = Failover(Health(two_upstreams(), clock=Clock()))
    limited = upstream_error(429, "rate_limit_error", "slow", **{"retry-after": "9"})
    script = Script(limited, upstream_error(500, message="could not connect"))
    with pytest.raises(UpstreamError) as raised:
        run(failover, script)
    assert (raised.value.status, raised.value.headers["retry-after"]) == (429, "9")


def test_a_lone_target_is_always_tried_and_may_retry_itself() -> None:
    clock = Clock()
    failover = Failover(Health(two_upstreams(), clock=clock))
    lone = (CHAIN[0],)
    down = upstream_error(500, message="could not connect")
    for _ in range(4):
        with pytest.raises(UpstreamError) as raised:
            run(failover, Script(down), lone)
        assert raised.value is down
    assert failover.health["default"].breaker.state == "open"
    script = Script("back")
    run(failover, script, lone)
    assert script.calls == [("default:m1", "key", True)]
    assert failover.health["default"].breaker.state == "closed"


def test_the_report_names_keys_never_their_values() -> None:
    clock = Clock()
    health = Health(two_upstreams(api_keys=["sk-b1-aaaa", "sk-b2-bbbb"]), clock=clock)
    health["b"].pool.rate_limited(health["b"].pool.keys[0], 12.0)
    health["default"].breaker.trip()
    clock.now += 2
    report = {r.name: r for r in health.report()}
    assert (report["default"].state, report["default"].until) == ("open", 28.0)
    assert [(k.label, k.state, k.until) for k in report["b"].keys] == [
        ("key 1", "cooling", 10.0),
        ("key 2", "ok", None),
    ]
    assert "sk-" not in repr(health.report())
