"""What exchanges cost: prices from the config, the upstream's own figure, the genai-prices
table; shown on the dashboard, in the JSON logs, in `replay list` / `show`, derived on read.

The scripted sessions run over real loopback servers with the real `anthropic` SDK and are
priced from config prices, so no figure here moves when the genai-prices data does.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import bridge_settings, make_client, start_bridge
from rich.console import Console
from typer.testing import CliRunner
from upstream import FakeUpstream, JSONReply, SSEReply, completion, openai_usage, text_stream

from claude_bridge.cli import render
from claude_bridge.cli.dashboard import Dashboard
from claude_bridge.cli.main import app as cli_app
from claude_bridge.cli.render import ServerInfo
from claude_bridge.proxy.app import create_app
from claude_bridge.proxy.config import ConfigError, Settings, config_template, load_settings
from claude_bridge.proxy.core.session import session_id
from claude_bridge.proxy.core.usage import reported_cost
from claude_bridge.proxy.events import Bus, Exchange
from claude_bridge.proxy.journal.writer import Recorder
from claude_bridge.proxy.logs import exchange_record
from claude_bridge.proxy.pricing import Pricing, Tokens

SESSION = "9f0c2a1e-2d4b-4c8e-9a1b-5e6f7a8b9c0d"
OTHER_SESSION = "0b7e5c3d-1111-4222-8333-944455566677"
PRICES = {
    "big-model": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75},
    "SMALL-*": {"input": 1.0, "output": 5.0},  # a glob; cache reads and writes at input price
}
PRICES_TOML = """
[prices."big-model"]
input = {big_input}
output = 15.0
cache_read = 0.3
cache_write = 3.75

[prices."SMALL-*"]
input = 1.0
output = 5.0
"""
HI = [{"role": "user", "content": "Hi"}]
# Request 1: 3,000 new + 6,000 cached + 1,000 written input tokens, 500 out (200 reasoning).
COST_1 = (3000 * 3.0 + 6000 * 0.3 + 1000 * 3.75 + 500 * 15.0) / 1e6
COST_2 = (2000 * 1.0 + 100 * 5.0) / 1e6
COST_3 = (1000 * 3.0 + 10 * 15.0) / 1e6


@dataclass
class Served:
    finished: list[Exchange]
    journal: Path
    dashboard: Dashboard


@contextmanager
def served(settings: Settings, journal: Path) -> Iterator[tuple[Any, Served]]:
    """claude-bridge on loopback with a journal, a dashboard and a list of finished exchanges
    on its bus; yields the SDK client on it."""
    bus = Bus()
    finished: list[Exchange] = []
    bus.subscribe(lambda kind, exchange: finished.append(exchange) if kind == "finish" else None)
    board = Dashboard(ServerInfo(listen="127.0.0.1:0", upstream="test"), console=Console())
    bus.subscribe(board)
    recorder = Recorder(journal)
    bridge = start_bridge(settings, create_app(settings, bus=bus, recorder=recorder))
    try:
        with make_client(bridge) as sdk:
            yield sdk, Served(finished, journal, board)
    finally:
        bridge.stop()


def run_session(sdk: Any, upstream: FakeUpstream) -> None:
    """Three requests: two of one Claude Code session (the id once in the header, once in
    `metadata.user_id`), one of another."""
    first = openai_usage(10000, 500, 6000, cache_write=1000, reasoning=200)
    upstream.reply(
        SSEReply(text_stream(["Hel", "lo"], usage=first)),
        JSONReply(completion("ok", usage=openai_usage(2000, 100))),
        SSEReply(text_stream(["Hi"], usage=openai_usage(1000, 10))),
    )
    sonnet = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": HI}
    header = "x-claude-code-session-id"
    with sdk.messages.stream(**sonnet, extra_headers={header: SESSION}) as stream:
        stream.until_done()
    user_id = json.dumps({"device_id": "ab" * 32, "account_uuid": "", "session_id": SESSION})
    sdk.messages.create(
        model="claude-haiku-4-5", max_tokens=64, messages=HI, metadata={"user_id": user_id}
    )
    with sdk.messages.stream(**sonnet, extra_headers={header: OTHER_SESSION}) as stream:
        stream.until_done()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`claude-bridge ...` in process with an isolated home; `config(big_input)` writes a
    config file with `PRICES_TOML` and returns its path."""
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "CLAUDE_BRIDGE_", "ANTHROPIC_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CLAUDE_BRIDGE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str | Path) -> str:
        argv = [str(a) for a in args]
        result = runner.invoke(cli_app, argv, env={"NO_COLOR": "1", "COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        return result.stdout

    return invoke


def listed(cli: Any, journal: Path, config: Path) -> Any:
    """`replay list --json` of `journal`, priced with `config`."""
    return json.loads(cli("replay", "list", journal, "--json", "--config", config))


def shown(cli: Any, record_id: str, journal: Path, config: Path, *flags: str) -> str:
    return str(cli("replay", "show", record_id, "-j", journal, "--config", config, *flags))


def config_file(path: Path, big_input: float = 3.0, extra: str = "") -> Path:
    path.write_text(PRICES_TOML.format(big_input=big_input) + extra, encoding="utf-8")
    return path


def test_a_scripted_session_costs_what_its_prices_say(
    upstream: FakeUpstream, tmp_path: Path, cli: Any
) -> None:
    settings = bridge_settings(upstream.base_url, prices=PRICES)
    with served(settings, tmp_path / "session.jsonl") as (sdk, run):
        run_session(sdk, upstream)

    first, second, _ = run.finished
    assert (first.input_tokens, first.cached_tokens, first.cache_write_tokens) == (3000, 6000, 1000)
    assert (first.output_tokens, first.reasoning_tokens) == (500, 200)
    costs = [e.cost.usd if e.cost else None for e in run.finished]
    assert costs == pytest.approx([COST_1, COST_2, COST_3])
    assert {e.cost.source for e in run.finished if e.cost} == {"config"}
    assert [e.session_id for e in run.finished] == [SESSION, SESSION, OTHER_SESSION]

    # The JSON logs.
    record = exchange_record("finish", first)
    assert record["cost_usd"] == pytest.approx(COST_1) and record["cost_source"] == "config"
    assert record["session_id"] == SESSION
    assert (record["cache_write_tokens"], record["reasoning_tokens"]) == (1000, 200)

    # The dashboard: in total, per session (the latest first), per request.
    view = run.dashboard.view()
    assert view.spend is not None
    assert view.spend.usd == pytest.approx(COST_1 + COST_2 + COST_3)
    assert view.spend.hit == pytest.approx(6000 / 13000)
    sessions = dict(view.sessions)
    assert [s for s, _ in view.sessions] == [OTHER_SESSION, SESSION]
    assert sessions[SESSION].requests == 2
    assert sessions[SESSION].usd == pytest.approx(COST_1 + COST_2)
    assert sessions[SESSION].hit == pytest.approx(6000 / 12000)
    frame = Console(width=200, file=io.StringIO(), color_system=None, record=True)
    frame.print(render.dashboard(view, 200, 40))
    text = frame.export_text()
    assert f"cost     {render.money(COST_1 + COST_2 + COST_3)}" in text
    assert f"9f0c2a1e {render.money(COST_1 + COST_2)} 2 req, hit 50%" in text
    assert "cache hit 46%" in text and render.money(COST_3) in text
    assert render.money(COST_2) in render.exchange_line(second).plain

    # The journal keeps usage, never a cost: `replay` prices it when it reads it.
    lines = [json.loads(line) for line in run.journal.read_text().splitlines()]
    assert lines[0]["session_id"] == SESSION
    assert lines[0]["usage"]["cache_write_tokens"] == 1000
    assert lines[0]["usage"]["reasoning_tokens"] == 200
    assert lines[0]["usage"]["upstream_cost"] is None and "cost_usd" not in json.dumps(lines)
    summaries = listed(cli, run.journal, config_file(tmp_path / "c.toml"))
    assert [s["cost_usd"] for s in summaries] == pytest.approx([COST_3, COST_2, COST_1])
    assert [s["session_id"] for s in summaries] == [OTHER_SESSION, SESSION, SESSION]

    # A corrected price re-prices the old records.
    dearer = config_file(tmp_path / "dearer.toml", big_input=6.0)
    repriced = listed(cli, run.journal, dearer)
    assert repriced[2]["cost_usd"] == pytest.approx(COST_1 + 3000 * 3.0 / 1e6)
    table = cli("replay", "list", run.journal, "--config", dearer)
    assert render.money(COST_1 + 3000 * 3.0 / 1e6) in table

    one = json.loads(shown(cli, repriced[2]["id"], run.journal, dearer, "--json"))
    assert one["cost_usd"] == repriced[2]["cost_usd"] and one["cost_source"] == "config"
    pretty = shown(cli, repriced[2]["id"], run.journal, dearer)
    assert "cached 6000, written 1000) out 500 (reasoning 200)" in pretty
    assert "per million tokens: input $6, output $15, cache read $0.3, cache write $3.75" in pretty
    assert f"session: {SESSION}" in pretty


def test_unknown_prices_show_as_unknown_never_as_zero(
    upstream: FakeUpstream, tmp_path: Path, cli: Any
) -> None:
    """A loopback upstream is a local server: no table prices it; it costs 0 only if priced."""
    settings = bridge_settings(upstream.base_url)
    upstream.reply(JSONReply(completion("ok", usage=openai_usage(2000, 100))))
    with served(settings, tmp_path / "unknown.jsonl") as (sdk, run):
        sdk.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=HI)

    (exchange,) = run.finished
    assert exchange.cost is not None and exchange.cost.usd is None
    assert exchange_record("finish", exchange)["cost_usd"] is None
    assert " ?  " in render.exchange_line(exchange).plain + "  "
    view = run.dashboard.view()
    assert view.spend is not None and view.spend.unpriced == 1 and view.spend.usd == 0
    frame = Console(width=200, file=io.StringIO(), color_system=None, record=True)
    frame.print(render.dashboard(view, 200, 40))
    assert "cost     $0 + 1 unpriced" in frame.export_text()

    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    (summary,) = listed(cli, run.journal, empty)
    assert summary["cost_usd"] is None and summary["cost_source"] is None
    pretty = shown(cli, summary["id"], run.journal, empty)
    assert 'cost: unknown (no price for big-model: set [prices."big-model"]' in pretty
    assert " ? " in cli("replay", "list", run.journal, "--config", empty)
    # Said free in the config, the local model costs 0.
    free = tmp_path / "free.toml"
    free.write_text('[prices."big-model"]\ninput = 0\noutput = 0\n', encoding="utf-8")
    (summary,) = listed(cli, run.journal, free)
    assert (summary["cost_usd"], summary["cost_source"]) == (0, "config")


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_the_upstreams_reported_cost_is_used(
    upstream: FakeUpstream, tmp_path: Path, cli: Any, stream: bool
) -> None:
    """OpenRouter's `usage.cost`, carried from the upstream's usage into the exchange and the
    journal; a config price for the model would still win."""
    usage = openai_usage(2000, 100, cost=0.0123)
    upstream.reply(
        SSEReply(text_stream(["ok"], usage=usage))
        if stream
        else JSONReply(completion("ok", usage=usage))
    )
    with served(bridge_settings(upstream.base_url), tmp_path / "or.jsonl") as (sdk, run):
        if stream:
            with sdk.messages.stream(model="claude-sonnet-4-5", max_tokens=8, messages=HI) as s:
                s.until_done()
        else:
            sdk.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=HI)

    (exchange,) = run.finished
    assert exchange.upstream_cost == 0.0123
    assert exchange.cost is not None
    assert (exchange.cost.usd, exchange.cost.source) == (0.0123, "upstream")
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    (summary,) = listed(cli, run.journal, empty)
    assert (summary["cost_usd"], summary["cost_source"]) == (0.0123, "upstream")
    (summary,) = listed(cli, run.journal, config_file(tmp_path / "c.toml"))
    assert summary["cost_source"] == "config"


def test_reported_cost_with_the_users_own_key_adds_the_providers_charge() -> None:
    assert reported_cost({"cost": 0.5}) == 0.5
    byok = {"cost": 0.01, "is_byok": True, "cost_details": {"upstream_inference_cost": 0.2}}
    assert reported_cost(byok) == pytest.approx(0.21)
    assert reported_cost({"cost": "0.5"}) is None and reported_cost({"cost": -1}) is None
    assert reported_cost({"cost": float("nan")}) is None and reported_cost(None) is None


# -- prices ------------------------------------------------------------------------------------


def pricing_for(**settings: Any) -> Pricing:
    return Pricing.from_settings(Settings.model_validate(settings))


def test_well_known_models_get_a_price_from_genai_prices() -> None:
    """Offline, from the table inside the package, by our provider profiles' names."""
    tokens = Tokens(input=1000, output=100)
    for base_url, model in [
        ("https://api.openai.com/v1", "gpt-4.1"),
        ("https://openrouter.ai/api/v1", "openai/gpt-4.1"),
        ("https://api.deepseek.com", "deepseek-chat"),
    ]:
        cost = pricing_for(openai_base_url=base_url).cost(tokens, "default", model)
        assert cost.source == "genai-prices", (base_url, model)
        assert cost.usd is not None and cost.usd > 0, (base_url, model)
    local = pricing_for(openai_base_url="http://localhost:8080/v1")
    assert local.cost(tokens, "default", "gpt-4.1").usd is None
    vllm = pricing_for(openai_base_url="https://gpu.example/v1", provider="vllm")
    assert vllm.cost(tokens, "default", "deepseek-chat").usd is None
    assert local.cost(Tokens(), "default", "gpt-4.1").usd == 0  # nothing used, nothing owed

    from genai_prices.data_snapshot import get_snapshot

    assert not get_snapshot().from_auto_update  # the bundled table: nothing was downloaded


def test_long_context_tiers_price_as_genai_prices_does() -> None:
    """Our rates from the table give genai-prices' own figures, below and above a tier (the
    first tiered model the table has: no model name to go stale)."""
    from genai_prices import Usage, calc_price
    from genai_prices.data_snapshot import get_snapshot
    from genai_prices.types import ModelPrice, TieredPrices

    provider, model = next(
        (p, m)
        for p in get_snapshot().providers
        for m in p.models
        if isinstance(m.prices, ModelPrice) and isinstance(m.prices.input_mtok, TieredPrices)
    )
    threshold = model.prices.input_mtok.tiers[0].start
    price = pricing_from_table(provider.id, model.id)
    for prompt in (threshold // 2, threshold + 1000):
        tokens = Tokens(input=prompt - 300, cache_read=200, cache_write=100, output=700)
        usage = Usage(
            input_tokens=prompt, cache_read_tokens=200, cache_write_tokens=100, output_tokens=700
        )
        expected = calc_price(usage, model.id, provider_id=provider.id).total_price
        assert price.cost(tokens) == pytest.approx(float(expected), rel=1e-9)


def test_time_of_day_prices_follow_the_time_of_each_exchange() -> None:
    """A model priced by the time of day (off-peak hours), whose rates are made once: each
    time still gets genai-prices' own figure for it, inside the window and a minute before."""
    from genai_prices import Usage, calc_price
    from genai_prices.data_snapshot import get_snapshot
    from genai_prices.types import TimeOfDateConstraint

    from claude_bridge.proxy.pricing import _find_in_dataset

    provider, model, constraint = next(
        (p, m, c.constraint)
        for p in get_snapshot().providers
        for m in p.models
        if isinstance(m.prices, list)
        for c in m.prices
        if isinstance(c.constraint, TimeOfDateConstraint)
    )
    start = datetime.combine(date(2026, 1, 5), constraint.start_time)
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    found = _find_in_dataset(provider.id, None, model.id)
    tokens = Tokens(input=1_000_000, output=1_000_000)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    costs = []
    for when in (start, start - timedelta(minutes=1), start):
        price = found.at(when)
        assert price is not None
        costs.append(price.cost(tokens))
        expected = calc_price(
            usage, model.id, provider_id=provider.id, genai_request_timestamp=when
        )
        assert costs[-1] == pytest.approx(float(expected.total_price), rel=1e-9), when
    assert costs[0] != costs[1]


def pricing_from_table(provider_id: str, model_id: str) -> Any:
    from claude_bridge.proxy.pricing import _find_in_dataset

    found = _find_in_dataset(provider_id, None, model_id).at(None)
    assert found is not None
    return found


def test_config_prices_beat_everything_and_match_globs_in_any_case() -> None:
    pricing = pricing_for(
        openai_base_url="https://openrouter.ai/api/v1",
        prices={"openai/gpt-4.1": {"input": 1, "output": 2}, "qwen*": {"input": 0, "output": 0}},
    )
    tokens = Tokens(input=1_000_000, output=1_000_000)
    cost = pricing.cost(tokens, "default", "openai/gpt-4.1", reported=99.0)
    assert (cost.usd, cost.source) == (3.0, "config")
    assert pricing.cost(tokens, "default", "Qwen3-Coder-30B").usd == 0
    assert pricing.cost(tokens, "default", "other/model", reported=0.5).source == "upstream"


def test_prices_in_the_config_file(tmp_path: Path) -> None:
    path = config_file(tmp_path / "config.toml")
    settings = load_settings(config_path=path, env={}, dotenv_path=None)
    assert settings.prices["big-model"].cache_write == 3.75
    assert settings.prices["SMALL-*"].cache_read is None
    # `config init` writes them back as they were read.
    written = tmp_path / "written.toml"
    written.write_text(config_template(settings), encoding="utf-8")
    assert load_settings(config_path=written, env={}, dotenv_path=None).prices == settings.prices
    bad = tmp_path / "bad.toml"
    bad.write_text('[prices."m"]\ninput = -1\noutput = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="prices"):
        load_settings(config_path=bad, env={}, dotenv_path=None)


# -- sessions --------------------------------------------------------------------------------


def test_session_id_from_the_header_or_the_body() -> None:
    as_json = json.dumps({"device_id": "x", "account_uuid": "", "session_id": SESSION})
    assert session_id({"X-Claude-Code-Session-Id": SESSION}, {}) == SESSION
    assert session_id({}, {"metadata": {"user_id": as_json}}) == SESSION
    legacy = f"user_{'a' * 64}_account__session_{SESSION}"
    assert session_id({}, {"metadata": {"user_id": legacy}}) == SESSION
    assert session_id({}, {"metadata": {"user_id": "{not json"}}) is None
    assert session_id({}, {"metadata": {"user_id": "someone"}}) is None
    assert session_id({}, []) is None
    assert session_id({"x-claude-code-session-id": "x" * 500}, {}) == "x" * 128
