"""Fallback chains and key pools: the configuration, then real servers on loopback.

The end-to-end tests run claude-bridge in front of two fault-injecting upstreams
(tests/upstream.py) with the official `anthropic` SDK (`max_retries=0`) as the client, and the
breakers on a clock the test moves.
"""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam
from conftest import Bridge, bridge_settings, make_client, start_bridge
from rich.console import Console
from upstream import (
    FakeUpstream,
    JSONReply,
    Silence,
    SSEReply,
    chunk,
    completion,
    error_body,
    rate_limited,
    text_stream,
)

from claude_bridge.cli.commands.replay import show_exchange
from claude_bridge.cli.render import Finished, ServerInfo, View, dashboard
from claude_bridge.cli.render import Health as Shown
from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import ConfigError, Settings, config_template, load_settings
from claude_bridge.proxy.core.routing import DEFAULT_UPSTREAM, Target, route
from claude_bridge.proxy.events import Bus, Exchange
from claude_bridge.proxy.journal import reader
from claude_bridge.proxy.journal.writer import Recorder
from claude_bridge.proxy.logs import exchange_record
from claude_bridge.proxy.pricing import Pricing
from claude_bridge.proxy.resilience.health import Health

KEY_1 = "sk-pool-one-0123456789abcdef"
KEY_2 = "sk-pool-two-0123456789abcdef"


# -- configuration -------------------------------------------------------------------------

CHAINS = """\
big_model = ["openrouter:deepseek/deepseek-chat", "groq:llama-3.3-70b", "qwen3:8b"]
small_model = "groq:llama-3.1-8b-instant"

[upstreams.openrouter]
base_url = "https://openrouter.ai/api/v1"
api_keys_env = ["OR_KEY_1", {env = "OR_KEY_2", weight = 3}]

[upstreams.groq]
base_url = "https://api.groq.com/openai/v1"
api_key_env = "GROQ_KEY"

[[routes]]
pattern = "*fable*"
upstream = "groq"
model = ["llama-3.3-70b", "openrouter:qwen/qwen3-coder", "gemma"]
"""
ENV = {"OR_KEY_1": KEY_1, "OR_KEY_2": KEY_2, "GROQ_KEY": "gsk-groq-key-0123456789"}


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_settings(config_path=path, env=ENV if env is None else env, dotenv_path=None)


def routed(settings: Settings, name: str) -> tuple[Target, ...]:
    return route(
        name,
        big_model=settings.big_chain(),
        small_model=settings.small_chain(),
        rules=settings.rules(),
        upstreams=settings.upstreams.keys(),
    ).targets


def test_chains_in_toml(tmp_path: Path) -> None:
    settings = load(tmp_path, CHAINS)
    assert routed(settings, "claude-opus-4-5") == (
        Target("openrouter", "deepseek/deepseek-chat"),
        Target("groq", "llama-3.3-70b"),
        Target(DEFAULT_UPSTREAM, "qwen3:8b"),  # not an upstream: Ollama's tag
    )
    assert routed(settings, "claude-haiku-4-5") == (Target("groq", "llama-3.1-8b-instant"),)
    # A rule's plain entries are on its own upstream.
    assert routed(settings, "claude-fable-5-2") == (
        Target("groq", "llama-3.3-70b"),
        Target("openrouter", "qwen/qwen3-coder"),
        Target("groq", "gemma"),
    )


def test_a_single_model_still_routes_as_before(tmp_path: Path) -> None:
    settings = load(tmp_path, 'big_model = "gpt-4o"\nsmall_model = "gpt-4o-mini"\n', env={})
    assert routed(settings, "claude-sonnet-4-5") == (Target(DEFAULT_UPSTREAM, "gpt-4o"),)
    assert settings.big_model == "gpt-4o" and settings.big_model_fallbacks == []


def test_chains_from_the_environment(tmp_path: Path) -> None:
    env = {
        "CLAUDE_BRIDGE_HOME": str(tmp_path),
        "BIG_MODEL": "a, b ,c",
        "SMALL_MODEL": "s",
        "CLAUDE_BRIDGE_SMALL_MODEL_FALLBACKS": "y,z",
    }
    settings = load_settings(env=env, dotenv_path=None)
    assert settings.big_chain() == ["a", "b", "c"]
    assert settings.small_chain() == ["s", "y", "z"]


def test_written_config_reloads_the_same(tmp_path: Path) -> None:
    settings = load(tmp_path, CHAINS)
    again = load(tmp_path, config_template(settings))
    assert again.rules() == settings.rules()
    assert again.big_chain() == settings.big_chain()
    assert again.upstreams["openrouter"].pool() == settings.upstreams["openrouter"].pool()


def test_pool_keys_are_secrets_and_never_shown(tmp_path: Path) -> None:
    settings = load(tmp_path, CHAINS)
    pool = settings.upstreams["openrouter"].pool()
    assert [(k.key.get_secret_value(), k.weight, k.env) for k in pool] == [
        (KEY_1, 1.0, "OR_KEY_1"),
        (KEY_2, 3.0, "OR_KEY_2"),
    ]
    assert {KEY_1, KEY_2} <= set(settings.secrets())
    shown = str(settings.public()) + config_template(settings)
    assert KEY_1 not in shown and KEY_2 not in shown
    literal = load(tmp_path, f'[upstreams.a]\nbase_url = "http://h/v1"\napi_keys = ["{KEY_1}"]\n')
    assert KEY_1 in literal.secrets() and KEY_1 not in config_template(literal)
    rotated = load(tmp_path, CHAINS, {**ENV, "OR_KEY_2": KEY_1})
    assert rotated.fingerprint() != settings.fingerprint()  # `code` reuses no stale server


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (
            '[upstreams.a]\nbase_url = "http://h/v1"\napi_keys_env = ["NOPE"]\n',
            {},
            "setting upstreams.a.api_keys_env: NOPE is not set",
        ),
        (
            f'[upstreams.a]\nbase_url = "http://h/v1"\napi_key = "{KEY_1}"\n'
            f'api_keys = ["{KEY_2}"]\n',
            {},
            "not both",
        ),
        (
            '[upstreams.a]\nbase_url = "http://h/v1"\napi_keys = [{key = "k", weight = 0}]\n',
            {},
            "setting upstreams.a.api_keys.0.weight: Input should be greater than 0",
        ),
        ('big_model_fallbacks = ["x"]\n', {}, "set big_model"),
    ],
)
def test_bad_pools_and_chains_are_one_line(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text, env)
    assert expected in str(raised.value)
    assert KEY_1 not in str(raised.value) and KEY_2 not in str(raised.value)


# -- end to end: two real upstreams, the real SDK ------------------------------------------

SECOND_KEY = "sk-second-upstream-0123456789"
HI: list[MessageParam] = [{"role": "user", "content": "Hi"}]
SONNET = "claude-sonnet-4-5"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Chain:
    """A bridge whose big model is `m-first` on `upstream`, then `m-second` on `second`."""

    bridge: Bridge
    client: anthropic.Anthropic
    health: Health
    clock: Clock
    finished: list[Exchange]

    def ask(self, text: str = "Hi") -> str:
        message = self.client.messages.create(
            model=SONNET, max_tokens=50, messages=[{"role": "user", "content": text}]
        )
        return "".join(b.text for b in message.content if b.type == "text")

    def stream(self) -> str:
        with self.client.messages.stream(model=SONNET, max_tokens=50, messages=HI) as stream:
            return stream.get_final_text()

    def report(self, upstream: str) -> Any:
        return next(r for r in self.health.report() if r.name == upstream)


@pytest.fixture
def make_chain(
    upstream: FakeUpstream, second_upstream: FakeUpstream
) -> Iterator[Callable[..., Chain]]:
    started: list[Chain] = []

    def make(
        second: dict[str, Any] | None = None, record: Path | None = None, **overrides: Any
    ) -> Chain:
        values: dict[str, Any] = {
            "upstreams": {
                "second": {
                    "base_url": second_upstream.base_url,
                    "api_key": SECOND_KEY,
                    **(second or {}),
                }
            },
            "big_model": ["m-first", "second:m-second"],
            **overrides,
        }
        settings = bridge_settings(upstream.base_url, **values)
        clock = Clock()
        health = Health(settings, clock=clock, rng=random.Random(3))
        bus = Bus()
        finished: list[Exchange] = []
        bus.subscribe(lambda kind, e: finished.append(e) if kind == "finish" else None)
        recorder = None if record is None else Recorder(record, secrets=settings.secrets())
        app = create_app(settings, bus=bus, health=health, recorder=recorder)
        bridge = start_bridge(settings, app=app)
        chain = Chain(bridge, make_client(bridge), health, clock, finished)
        started.append(chain)
        return chain

    yield make
    for chain in started:
        chain.client.close()
        chain.bridge.stop()


def test_429_with_retry_after_moves_to_the_next_target_json_and_stream(
    make_chain: Callable[..., Chain], upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    chain = make_chain()
    upstream.reply(rate_limited("7"))
    second_upstream.reply(JSONReply(completion("from the second")))

    assert chain.ask() == "from the second"
    assert upstream.requests[0].json["model"] == "m-first"
    assert second_upstream.requests[0].json["model"] == "m-second"
    assert second_upstream.requests[0].headers["authorization"] == f"Bearer {SECOND_KEY}"
    done = chain.finished[-1]
    assert (done.upstream, done.upstream_model, done.status) == ("second", "m-second", 200)
    assert [(a.upstream, a.outcome, a.status) for a in done.attempts] == [
        (DEFAULT_UPSTREAM, "failed", 429),
        ("second", "ok", None),
    ]

    # The first target's key rests 7 s (on the test's clock): a stream now skips it at once.
    second_upstream.reply(SSEReply(text_stream(["stre", "am"])))
    assert chain.stream() == "stream"
    assert len(upstream.requests) == 1
    assert chain.report(DEFAULT_UPSTREAM).keys[0].state == "cooling"

    # Rested, it is asked again; a stream it refuses goes to the second too.
    chain.clock.now += 7
    upstream.reply(rate_limited("7"))
    second_upstream.reply(SSEReply(text_stream(["again"])))
    assert chain.stream() == "again"
    assert len(upstream.requests) == 2 and len(second_upstream.requests) == 3


def test_a_refused_connection_or_a_silent_upstream_moves_on(
    make_chain: Callable[..., Chain], upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    chain = make_chain(openai_base_url=dead)
    second_upstream.reply(JSONReply(completion("alive")), SSEReply(text_stream(["al", "ive"])))
    assert chain.ask() == "alive"
    assert chain.stream() == "alive"
    assert chain.finished[-1].attempts[0].error_type == "api_error"

    chain = make_chain(read_timeout=0.5)  # no headers within it: a timeout, then the next
    upstream.reply(Silence())
    second_upstream.reply(JSONReply(completion("awake")))
    assert chain.ask() == "awake"
    assert chain.finished[-1].attempts[0].status == 504


def test_keys_rotate_on_429_and_the_rested_key_is_skipped(
    make_chain: Callable[..., Chain], second_upstream: FakeUpstream
) -> None:
    keys = ["sk-pool-key-one-000000", "sk-pool-key-two-000000"]
    chain = make_chain(second={"api_key": None, "api_keys": keys}, big_model="second:m-second")
    second_upstream.reply(rate_limited(), JSONReply(completion("second key")))
    assert chain.ask() == "second key"
    used = [r.headers["authorization"].removeprefix("Bearer ") for r in second_upstream.requests]
    assert sorted(used) == sorted(keys)  # one request each: the 429 moved to the other key

    second_upstream.always(JSONReply(completion("ok")))
    for _ in range(4):
        chain.ask()
    later = {r.headers["authorization"] for r in second_upstream.requests[2:]}
    assert later == {f"Bearer {used[1]}"}  # the rate-limited key rests (2 s, no retry-after)
    states = [(k.label, k.state) for k in chain.report("second").keys]
    assert ("key 1" if used[0] == keys[0] else "key 2", "cooling") in states
    chain.clock.now += 2
    for _ in range(12):
        chain.ask()
    assert {r.headers["authorization"] for r in second_upstream.requests[6:]} == {
        f"Bearer {k}" for k in keys
    }


def test_a_breaker_opens_is_skipped_and_recovers_after_the_cooldown(
    make_chain: Callable[..., Chain], upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    chain = make_chain()
    upstream.always(JSONReply(error_body("upstream down", "server_error"), 503))
    second_upstream.always(JSONReply(completion("second")))
    for _ in range(3):
        assert chain.ask() == "second"
    assert len(upstream.requests) == 3  # one each: in a chain the upstream does not retry
    assert chain.report(DEFAULT_UPSTREAM).state == "open"

    for _ in range(3):
        assert chain.ask() == "second"
    assert len(upstream.requests) == 3  # skipped at once while open
    assert [a.outcome for a in chain.finished[-1].attempts] == ["skipped", "ok"]

    chain.clock.now += 30  # the cooldown: one request probes it
    upstream.always(JSONReply(completion("first is back")))
    assert chain.ask() == "first is back"
    assert chain.report(DEFAULT_UPSTREAM).state == "ok"
    assert chain.ask() == "first is back"


def test_no_failover_after_the_first_byte(
    make_chain: Callable[..., Chain], upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    chain = make_chain()
    started = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Half an an"})]
    upstream.reply(SSEReply(started, end="close"))
    with pytest.raises(anthropic.APIStatusError) as raised:
        chain.stream()
    assert raised.value.status_code == 200  # committed: the failure is the `error` event
    limited = 'data: {"error": {"message": "Rate limit exceeded", "code": 429}}\n\n'
    upstream.reply(SSEReply([started[0], limited]))
    with pytest.raises(anthropic.APIStatusError) as raised:
        chain.stream()
    assert raised.value.type == "rate_limit_error"
    assert second_upstream.requests == []


def test_a_context_overflow_goes_to_a_larger_window_only(
    make_chain: Callable[..., Chain], upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    overflow = JSONReply(
        error_body(
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9000 tokens.",
            code="context_length_exceeded",
        ),
        400,
    )
    small, large = {"context_window": 8192}, {"context_window": 131072}
    chain = make_chain(models={"m-first": small, "m-second": large})
    upstream.reply(overflow)
    second_upstream.reply(JSONReply(completion("it fits here")))
    assert chain.ask() == "it fits here"

    # Nothing known to be larger: the client gets the overflow and compacts.
    chain = make_chain(models={"m-first": small, "m-second": {"context_window": 4096}})
    upstream.reply(overflow)
    with pytest.raises(anthropic.BadRequestError) as raised:
        chain.ask()
    assert "prompt is too long: 9000 tokens > 8192 maximum" in raised.value.message
    assert len(second_upstream.requests) == 1  # the first test's only


def test_the_clients_own_mistakes_are_never_tried_elsewhere(
    make_chain: Callable[..., Chain], upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    chain = make_chain()
    with pytest.raises(anthropic.BadRequestError):
        chain.client.messages.create(model=SONNET, max_tokens=50, messages=[])
    assert upstream.requests == [] and second_upstream.requests == []
    upstream.reply(JSONReply(error_body("messages.0.content: bad part"), 400))
    with pytest.raises(anthropic.BadRequestError):
        chain.ask()
    upstream.reply(JSONReply(error_body("request too large", "request_too_large"), 413))
    with pytest.raises(anthropic.APIStatusError) as raised:
        chain.ask()
    assert raised.value.status_code == 413
    assert len(upstream.requests) == 2 and second_upstream.requests == []


def test_when_every_target_fails_the_most_telling_error_with_retry_after(
    make_chain: Callable[..., Chain], upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    chain = make_chain()
    upstream.reply(rate_limited("9"))
    second_upstream.reply(JSONReply(error_body("bad gateway", "server_error"), 502))
    with pytest.raises(anthropic.RateLimitError) as raised:
        chain.ask()
    assert raised.value.response.headers["retry-after"] == "9"
    assert "Rate limit reached" in raised.value.message
    assert [a.status for a in chain.finished[-1].attempts] == [429, 500]


def test_every_attempt_is_journaled_logged_and_shown_never_a_key(
    make_chain: Callable[..., Chain], second_upstream: FakeUpstream, tmp_path: Path
) -> None:
    keys = ["sk-pool-key-one-000000", "sk-pool-key-two-000000"]
    journal = tmp_path / "journal.jsonl"
    chain = make_chain(
        second={"api_key": None, "api_keys": keys}, big_model="second:m", record=journal
    )

    def refused(request: Any) -> JSONReply:  # echoes the key, as OpenAI's 401 does
        key = request.headers["authorization"].removeprefix("Bearer ")
        return JSONReply(error_body(f"Incorrect API key provided: {key}", code="bad_key"), 401)

    second_upstream.reply(refused, JSONReply(completion("the other key")))
    assert chain.ask() == "the other key"

    done = chain.finished[-1]
    logged = json.dumps(exchange_record("finish", done))
    (record,) = reader.load(journal).records
    console = Console(record=True, width=240)
    for part in show_exchange(record, Pricing.from_settings(chain.bridge.settings)):
        console.print(part)
    shown = console.export_text()
    assert [a.outcome for a in record.attempts] == ["failed", "ok"]
    assert record.attempts[0].status == 502 and "refused the API key" in str(
        record.attempts[0].error
    )
    assert "1. second:m (key " in shown and "failed" in shown and "2. second:m" in shown
    assert [a["outcome"] for a in json.loads(logged)["attempts"]] == ["failed", "ok"]
    for text in (logged, journal.read_text(), shown):
        assert not any(key in text for key in keys)

    # The dashboard: the refused key is open, and the request took two tries.
    view = View(
        info=ServerInfo(listen="127.0.0.1:1", upstream="x"),
        now=0.0,
        uptime=1.0,
        requests=1,
        errors=0,
        input_tokens=0,
        cached_tokens=0,
        output_tokens=0,
        per_minute=1,
        in_flight=(),
        recent=[Finished(done, datetime(2026, 1, 1))],
        health=Shown(upstreams=tuple(chain.health.report())),
    )
    screen = Console(record=True, width=200)
    screen.print(dashboard(view, 200, 40))
    drawn = screen.export_text()
    assert "upstream  default ok  second ok (key 1 " in drawn and "open 30s" in drawn
    assert "m · 2 tries" in drawn
