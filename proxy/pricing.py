"""What an exchange cost: its token usage times a price, or what the upstream said it cost.

Where a price comes from, strongest first:

1. the config's `[prices."MODEL"]` (USD per million tokens; globs as in `routes`), matched on
   the upstream model name: the user's word beats every table;
2. the cost the upstream reported itself (OpenRouter's `usage.cost`), kept on the exchange;
3. the `genai-prices` dataset shipped inside that package (never updated at run time: nothing
   is downloaded), looked up by the provider our profile names (`PROVIDER_IDS`), else the base
   URL, else the model name alone.

A self-hosted server (a loopback or private address, or a vLLM / llama.cpp / Ollama / LM Studio
profile) is never priced from the dataset: its model names mean nothing there, and it costs 0
only when the config says so. A price that cannot be found is unknown (`Cost.usd is None`),
never 0.

Costs are derived, not stored: the journal keeps the usage, so a corrected price re-prices old
records when they are read.
"""

from __future__ import annotations

import bisect
import fnmatch
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple
from urllib.parse import urlsplit

from .core import providers
from .core.routing import DEFAULT_UPSTREAM, parse_chain

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, ModelPrice

    from .config import PriceSettings, Settings, UpstreamSettings
    from .events import Exchange
    from .journal.records import Record

log = logging.getLogger("claude_bridge.pricing")

Source = Literal["config", "upstream", "genai-prices"]

PROVIDER_IDS = {
    "openai": "openai",
    "azure": "azure",
    "openrouter": "openrouter",
    "deepseek": "deepseek",
    "gemini": "google",
    "groq": "groq",
    "xai": "x-ai",
    "mistral": "mistral",
}
"""Our provider profiles -> genai-prices provider ids. `generic` is looked up by base URL and
model name; the self-hosted profiles are not looked up at all."""
SELF_HOSTED = frozenset({"vllm", "llamacpp", "ollama", "lmstudio"})
MAX_CACHED = 4096
"""Price look-ups kept; client-chosen model names must not grow it without end."""
USD_DIGITS = 8
"""Decimals kept in JSON output: a hundredth of a micro-dollar (float noise goes)."""
_PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")


class Tokens(NamedTuple):
    """An exchange's usage as Anthropic counts it: the three input parts are disjoint;
    `output` includes `reasoning` (shown apart, billed as output)."""

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    @property
    def prompt(self) -> int:
        return self.input + self.cache_read + self.cache_write

    @property
    def used(self) -> bool:
        return bool(self.prompt or self.output)


class Rates(NamedTuple):
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float


@dataclass(frozen=True)
class Price:
    """Rates, and the higher rates that apply to a whole request once its prompt is longer
    than a threshold (long-context pricing: crossing it re-prices every token)."""

    rates: Rates
    source: Source
    tiers: tuple[tuple[int, Rates], ...] = ()
    """(threshold, rates) by threshold, ascending: used when the prompt exceeds it."""

    def rates_for(self, prompt: int) -> Rates:
        if not self.tiers:
            return self.rates
        position = bisect.bisect_left([start for start, _ in self.tiers], prompt)
        return self.tiers[position - 1][1] if position else self.rates

    def cost(self, tokens: Tokens) -> float:
        r = self.rates_for(tokens.prompt)
        micro = (
            tokens.input * r.input
            + tokens.cache_read * r.cache_read
            + tokens.cache_write * r.cache_write
            + tokens.output * r.output
        )
        return micro / 1_000_000


@dataclass(frozen=True)
class Cost:
    usd: float | None
    """None: unknown (no price for this model, and the upstream reported none)."""
    source: Source | None = None
    """Where it came from; None with `usd == 0.0` when nothing was used."""
    price: Price | None = None

    def fields(self) -> dict[str, Any]:
        """`cost_usd` (null when unknown) and `cost_source`, for JSON output."""
        usd = None if self.usd is None else round(self.usd, USD_DIGITS)
        return {"cost_usd": usd, "cost_source": self.source}


UNKNOWN = Cost(None)
NOTHING = Cost(0.0)


def configured_price(setting: PriceSettings) -> Price:
    """A `[prices."MODEL"]` entry; cache reads and writes unset cost what input costs."""
    cache_read = setting.input if setting.cache_read is None else setting.cache_read
    cache_write = setting.input if setting.cache_write is None else setting.cache_write
    return Price(Rates(setting.input, setting.output, cache_read, cache_write), "config")


def is_self_hosted(base_url: str, profile: str) -> bool:
    """A server of the user's own: on this machine or a private network, or a local server's
    profile (those serve whatever weights the user loaded, under names of their choosing)."""
    if profile in SELF_HOSTED:
        return True
    host = urlsplit(base_url if "://" in base_url else f"http://{base_url}").hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


# -- the genai-prices dataset ---------------------------------------------------------------


def _dataset_price(model_price: ModelPrice) -> Price | None:
    """genai-prices' token prices (Decimal or tiered) as our rates; None for a model priced by
    something else (audio minutes, pages...). A model with no price at all is free (`:free`)."""
    from genai_prices.types import TieredPrices

    values = [getattr(model_price, key, None) for key in _PRICE_KEYS]
    if values[0] is None and values[1] is None:
        priced = any(v is not None for k, v in vars(model_price).items() if not k.startswith("_"))
        return None if priced else Price(Rates(0.0, 0.0, 0.0, 0.0), "genai-prices")
    starts = sorted({t.start for v in values if isinstance(v, TieredPrices) for t in v.tiers})

    def rate(value: Any, above: int | None) -> float | None:
        if isinstance(value, TieredPrices):
            applicable = value.base
            for tier in value.tiers:
                if above is not None and tier.start <= above:
                    applicable = tier.price
            return float(applicable)
        return None if value is None else float(value)

    def rates(above: int | None) -> Rates:
        input_, output, cache_read, cache_write = (rate(v, above) for v in values)
        base = input_ or 0.0
        return Rates(
            base,
            output or 0.0,
            base if cache_read is None else cache_read,
            base if cache_write is None else cache_write,
        )

    return Price(rates(None), "genai-prices", tuple((start, rates(start)) for start in starts))


@dataclass(frozen=True)
class _Found:
    """A dataset model: its one price, or (for dated or time-of-day prices) the model to ask
    at the time of each exchange."""

    price: Price | None
    model: ModelInfo | None = None
    conditional: dict[int, Price | None] = field(default_factory=dict, compare=False)
    """Our price of each of the model's conditional prices, by the `id` of genai-prices' own
    (which picks one of them for a time): made once, not on each exchange."""

    def at(self, when: datetime | None) -> Price | None:
        if self.model is None:
            return self.price
        chosen = self.model.get_prices(when or datetime.now(tz=UTC))
        key = id(chosen)
        return self.conditional[key] if key in self.conditional else _dataset_price(chosen)


_NOT_FOUND = _Found(None)


def _find_in_dataset(provider_id: str | None, base_url: str | None, model: str) -> _Found:
    return _found(_dataset_model(provider_id, base_url, model))


def _dataset_model(provider_id: str | None, base_url: str | None, model: str) -> ModelInfo | None:
    from genai_prices.data_snapshot import get_snapshot

    try:
        return get_snapshot().find_provider_model(model, None, provider_id, base_url)[1]
    except LookupError:
        return None


def _found(info: ModelInfo | None) -> _Found:
    from genai_prices.types import ModelPrice

    if info is None:
        return _NOT_FOUND
    if isinstance(info.prices, ModelPrice):
        return _Found(_dataset_price(info.prices))
    return _Found(None, info, {id(c.prices): _dataset_price(c.prices) for c in info.prices})


def dataset_model(provider: str, base_url: str, model: str) -> ModelInfo | None:
    """The dataset's entry for `model` on an upstream of profile `provider` at `base_url`
    (its prices, and its context window for `proxy/windows.py`)."""
    provider_id = PROVIDER_IDS.get(provider)
    if provider_id is not None:
        return _dataset_model(provider_id, None, model)
    # No profile of ours names it: the dataset's own URL patterns, then the model name alone.
    return _dataset_model(None, base_url, model) or _dataset_model(None, None, model)


def dataset_lookup(provider: str, base_url: str, model: str) -> _Found:
    """The dataset's price for `model` on an upstream of profile `provider` at `base_url`."""
    return _found(dataset_model(provider, base_url, model))


# -- pricing exchanges -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Endpoint:
    base_url: str
    provider: str
    self_hosted: bool


class Pricing:
    """Prices by (upstream name, upstream model), looked up once and kept."""

    def __init__(
        self,
        prices: Mapping[str, PriceSettings],
        endpoints: Mapping[str, UpstreamSettings],
    ) -> None:
        priced = [(name, configured_price(p)) for name, p in prices.items()]
        self._exact = {name.lower(): price for name, price in priced if not _glob(name)}
        self._globs = [(name.lower(), price) for name, price in priced if _glob(name)]
        self._endpoints = {name: _endpoint(e) for name, e in endpoints.items()}
        self._found: dict[tuple[str, str], _Found] = {}
        self._configured: dict[str, Price | None] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Pricing:
        return cls(settings.prices, settings.endpoints())

    def configured(self, model: str) -> Price | None:
        if model not in self._configured:  # looked up once a model: globs cost a match each
            if len(self._configured) >= MAX_CACHED:
                self._configured.clear()
            self._configured[model] = self._configured_price(model)
        return self._configured[model]

    def _configured_price(self, model: str) -> Price | None:
        lowered = model.lower()
        price = self._exact.get(lowered)
        if price is not None or not self._globs:
            return price
        return next((p for glob, p in self._globs if fnmatch.fnmatchcase(lowered, glob)), None)

    def dataset(self, upstream: str, model: str, when: datetime | None = None) -> Price | None:
        key = (upstream, model)
        found = self._found.get(key)
        if found is None:
            found = self._lookup(upstream, model)
            if len(self._found) >= MAX_CACHED:
                self._found.clear()
            self._found[key] = found
        return found.at(when)

    def _lookup(self, upstream: str, model: str) -> _Found:
        endpoint = self._endpoints.get(upstream or DEFAULT_UPSTREAM)
        if endpoint is None or endpoint.self_hosted or not model:
            return _NOT_FOUND
        try:
            return dataset_lookup(endpoint.provider, endpoint.base_url, model)
        except Exception:  # a dataset of a newer shape than this code knows: no price
            log.exception("genai-prices could not price %s on %s", model, upstream)
            return _NOT_FOUND

    def cost(
        self,
        tokens: Tokens,
        upstream: str,
        model: str,
        *,
        reported: float | None = None,
        when: datetime | None = None,
    ) -> Cost:
        price = self.configured(model)
        if price is not None:
            return Cost(price.cost(tokens), "config", price)
        if reported is not None:
            return Cost(reported, "upstream")
        if not tokens.used:
            return NOTHING
        price = self.dataset(upstream, model, when)
        return UNKNOWN if price is None else Cost(price.cost(tokens), price.source, price)

    def of_exchange(self, exchange: Exchange) -> Cost:
        return self.cost(
            exchange_tokens(exchange),
            exchange.upstream,
            exchange.upstream_model,
            reported=exchange.upstream_cost,
        )

    def of_record(self, record: Record) -> Cost:
        """A recorded exchange, at the prices of now for the day it was made."""
        usage = record.usage
        tokens = Tokens(
            usage.input_tokens,
            usage.cached_tokens,
            usage.cache_write_tokens,
            usage.output_tokens,
            usage.reasoning_tokens,
        )
        when = datetime.fromtimestamp(record.timings.started_at, tz=UTC)
        upstream = record.routing.upstream or DEFAULT_UPSTREAM
        model = record.routing.upstream_model
        return self.cost(tokens, upstream, model, reported=usage.upstream_cost, when=when)

    def warm(self, models: Iterable[tuple[str, str]] = ()) -> None:
        """Load the dataset (half a second) and look `(upstream, model)` pairs up: off the
        event loop, before the first request needs them."""
        try:
            import genai_prices.data  # noqa: F401
        except Exception:  # a broken install: costs come from the config and the upstreams
            log.exception("the genai-prices table could not be loaded")
            return
        for upstream, model in models:
            self.dataset(upstream, model)


def routed_models(settings: Settings) -> list[tuple[str, str]]:
    """The (upstream, model) pairs the settings name: what the first requests will price."""
    names = settings.upstreams.keys()
    targets = [*parse_chain(settings.big_chain(), names)]
    targets += parse_chain(settings.small_chain(), names)
    targets += [t for rule in settings.rules() for t in rule.fallbacks]
    pairs = [(t.upstream, t.model) for t in targets]
    pairs += [(rule.upstream, rule.model) for rule in settings.routes if rule.model]
    return pairs


def _glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def _endpoint(settings: UpstreamSettings) -> _Endpoint:
    profile = providers.resolve(settings.provider, settings.base_url, "").name
    return _Endpoint(settings.base_url, profile, is_self_hosted(settings.base_url, profile))


def exchange_tokens(exchange: Exchange) -> Tokens:
    return Tokens(
        exchange.input_tokens,
        exchange.cached_tokens,
        exchange.cache_write_tokens,
        exchange.output_tokens,
        exchange.reasoning_tokens,
    )
