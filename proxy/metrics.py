"""Prometheus metrics: a bus listener that counts what the proxy serves, and the text format
`GET /metrics` answers with.

Each app has its own `CollectorRegistry` (not prometheus-client's global one), so tests and
several apps in one process never mix their counts. Per request the listener costs a few dict
look-ups and counter updates: the labelled children are kept per (upstream, model).

With several workers (`serve --workers`, proxy/workers.py) each worker counts its own
requests in prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set before the
workers start): a scrape, whichever worker answers it, adds up the files of all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from .events import Exchange
from .logs import failed

PREFIX = "claude_bridge_"
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
TOKEN_KINDS = ("input", "cache_read", "cache_write", "output", "reasoning")
MAX_MODELS = 200
"""Distinct model labels; past this, models are counted as `other` (without routing rules the
upstream model is the client's choice, which must not grow the scrape without end)."""
OTHER = "other"
UNROUTED = "none"
"""The upstream label of requests refused before routing (bad body, wrong key)."""


@dataclass
class _Series:
    """The children of one (upstream, model), so a request does not look labels up."""

    upstream: str
    model: str
    """The model's label: its name, or `OTHER`."""
    duration: Histogram
    ttft: Histogram
    tokens: tuple[Counter, ...]
    """By `TOKEN_KINDS`."""
    unpriced: Counter
    requests: dict[int, Counter] = field(default_factory=dict)
    """By HTTP status."""
    cost: dict[str, Counter] = field(default_factory=dict)
    """By price source."""


class Metrics:
    """Subscribe the instance to a `Bus`; serve `exposition()` at `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        pair = ("upstream", "model")

        def counter(name: str, doc: str, labels: tuple[str, ...] = pair) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=self.registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(PREFIX + name, doc, pair, buckets=buckets, registry=self.registry)

        self._requests = counter(
            "requests", "Messages requests answered, by upstream, upstream model and HTTP status "
            "(a stream that failed after its 200 counts as 200 and as an upstream error).",
            (*pair, "status"),
        )  # fmt: skip
        self._duration = histogram(
            "request_duration_seconds", "Messages requests, start to end.", LATENCY_BUCKETS
        )
        self._ttft = histogram(
            "time_to_first_token_seconds",
            "Streams: from the request to the upstream's first byte.",
            TTFT_BUCKETS,
        )
        self._tokens = counter(
            "tokens", "Tokens by kind: input (not cached), cache_read, cache_write, output "
            "(reasoning included), reasoning.",
            (*pair, "kind"),
        )  # fmt: skip
        self._cost = counter(
            "cost_usd", "Cost in USD, by where the price came from (config, upstream, "
            "genai-prices).",
            (*pair, "source"),
        )  # fmt: skip
        self._unpriced = counter(
            "unpriced_requests", "Requests with usage whose cost is unknown (no price)."
        )
        self._errors = counter(
            "upstream_errors", "Routed requests that failed, by upstream and Anthropic error type.",
            ("upstream", "type"),
        )  # fmt: skip
        self._in_flight = Gauge(
            PREFIX + "requests_in_flight",
            "Messages requests being served.",
            registry=self.registry,
            multiprocess_mode="livesum",  # the workers alive now, added up
        )
        self._pings = counter(
            "stream_pings", "`ping` events sent while an upstream was silent (counted when the "
            "stream ends).",
            ("upstream",),
        )  # fmt: skip
        self._count_tokens = counter(
            "count_tokens_requests", "count_tokens requests, by HTTP status.", ("status",)
        )
        self._journal_waits = Counter(
            PREFIX + "journal_queue_full",
            "Times a finished exchange found the journal writer's queue full, and the proxy "
            "waited for room (nothing is dropped).",
            registry=self.registry,
        )
        self._journal_waited = Counter(
            PREFIX + "journal_wait_seconds",
            "Seconds the proxy waited for room in the journal writer's queue.",
            registry=self.registry,
        )
        self._series: dict[tuple[str, str], _Series] = {}
        self._models: set[str] = set()

    # -- the listener ---------------------------------------------------------------------------

    KINDS = ("start", "finish")
    """The events it takes (`Bus.subscribe`)."""

    def __call__(self, kind: str, exchange: Exchange) -> None:
        if kind == "start":
            self._in_flight.inc()
        elif kind == "finish":
            self._in_flight.dec()
            self._finished(exchange)

    def _finished(self, exchange: Exchange) -> None:
        upstream = exchange.upstream or UNROUTED
        series = self._series_of(upstream, exchange.upstream_model)
        requests = series.requests.get(exchange.status)
        if requests is None:
            requests = series.requests[exchange.status] = self._requests.labels(
                series.upstream, series.model, str(exchange.status)
            )
        requests.inc()
        duration = exchange.duration
        if duration is not None:
            series.duration.observe(duration)
        ttft = exchange.ttft
        if exchange.stream and ttft is not None:
            series.ttft.observe(ttft)
        counts = (
            exchange.input_tokens,
            exchange.cached_tokens,
            exchange.cache_write_tokens,
            exchange.output_tokens,
            exchange.reasoning_tokens,
        )
        for child, value in zip(series.tokens, counts, strict=True):
            if value:
                child.inc(value)
        self._account_cost(exchange, series)
        if exchange.pings:
            self._pings.labels(upstream).inc(exchange.pings)
        if exchange.upstream and failed(exchange):
            kind = exchange.error_type or f"http_{exchange.status}"
            self._errors.labels(upstream, kind).inc()

    def _account_cost(self, exchange: Exchange, series: _Series) -> None:
        cost = exchange.cost
        if cost is None:
            return
        if cost.usd is None:
            series.unpriced.inc()
        elif cost.source is not None:
            child = series.cost.get(cost.source)
            if child is None:
                child = series.cost[cost.source] = self._cost.labels(
                    series.upstream, series.model, cost.source
                )
            child.inc(cost.usd)

    def _series_of(self, upstream: str, model: str) -> _Series:
        series = self._series.get((upstream, model))
        if series is None:
            # Models past the limit share the `other` children (and are not kept by name).
            label = self._model(model)
            series = self._series.get((upstream, label))
            if series is None:
                series = self._series[(upstream, label)] = _Series(
                    upstream,
                    label,
                    self._duration.labels(upstream, label),
                    self._ttft.labels(upstream, label),
                    tuple(self._tokens.labels(upstream, label, k) for k in TOKEN_KINDS),
                    self._unpriced.labels(upstream, label),
                )
        return series

    def _model(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODELS:
            return OTHER
        self._models.add(model)
        return model

    # -- the other counts and the scrape ---------------------------------------------------------

    def count_tokens(self, status: int) -> None:
        self._count_tokens.labels(str(status)).inc()

    def journal_stalled(self, waited: float) -> None:
        """The journal writer's queue was full for `waited` seconds (`Recorder.on_stall`)."""
        self._journal_waits.inc()
        self._journal_waited.inc(waited)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The metrics in the format `accept` asks for (Prometheus text by default), and its
        content type: of every worker in multiprocess mode, else of this app."""
        encoder, content_type = choose_encoder(accept or "")
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            workers = CollectorRegistry()
            MultiProcessCollector(workers, directory)  # type: ignore[no-untyped-call]
            return encoder(workers), content_type
        return encoder(self.registry), content_type
