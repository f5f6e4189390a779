"""What one exchange saw, collected as it happens, for the journal.

The pipeline reaches the trace through `Exchange.trace` (None when recording is off, so the
hot path pays one `is not None`); the recording transport finds it through `CURRENT_TRACE`,
set when the exchange starts, because the upstream client is shared by all exchanges. Nothing
here formats or redacts: that happens once, when the writer turns the trace into a record.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.sse import SSEDecoder

if TYPE_CHECKING:  # the plan module reads the settings; the trace only what was planned
    from ..plan import Plan

CURRENT_TRACE: ContextVar[Trace | None] = ContextVar("claude_bridge_trace", default=None)


@dataclass
class UpstreamTrace:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    sent_ms: float = 0.0
    status: int | None = None
    response_ms: float | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    error: str | None = None
    complete: bool = False


class Trace:
    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: float | None = None):
        self._clock = clock
        self._t0 = clock()
        self.started_at = time.time() if wall is None else wall
        self.method = "POST"
        self.path = ""
        self.client_headers: list[tuple[str, str]] = []
        self.client_raw: bytes | None = None
        self.upstream_name: str | None = None
        self.mode = "openai"
        self.options: dict[str, Any] | None = None
        self.message_id: str | None = None
        self.upstream: UpstreamTrace | None = None
        self.upstream_retries: list[str] = []
        self.turns: list[UpstreamTrace] = []
        """Earlier upstream turns of the same answer (the web search loop asks again)."""
        self.upstream_first_byte_ms: float | None = None
        self.client_first_byte_ms: float | None = None
        self.end_ms: float | None = None
        self.reply_body: dict[str, Any] | None = None
        self.reply_reads: list[tuple[float, bytes]] | None = None
        """A stream's bytes as the client got them, with their offsets: decoded into events
        by the journal's writer (`reply_events`), not on the event loop."""

    def ms(self) -> float:
        return round((self._clock() - self._t0) * 1000, 3)

    # -- the client side (app and pipeline) ------------------------------------------------

    def client_request(self, method: str, path: str, headers: Iterable[tuple[str, str]]) -> None:
        self.method, self.path = method, path
        self.client_headers = list(headers)

    def client_body(self, raw: bytes) -> None:
        self.client_raw = raw

    def prepared(self, planned: Plan) -> None:
        """What was planned (`plan.Plan`): the upstream, the dialect spoken to it, the options
        and message id the request was translated with (what `replay diff` re-runs)."""
        self.upstream_name, self.mode = planned.upstream, planned.dialect
        self.options = asdict(planned.options)
        self.message_id = planned.ctx.message_id

    def client_message(self, message: dict[str, Any]) -> None:
        self.client_first_byte_ms = self.ms()
        self.reply_body = message

    async def tap_client(self, stream: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
        """The client's event stream, passed through unchanged and recorded as events."""
        reads: list[tuple[float, bytes]] = []
        self.reply_reads = reads
        try:
            async for data in stream:
                offset = self.ms()
                if self.client_first_byte_ms is None:
                    self.client_first_byte_ms = offset
                reads.append((offset, data))
                yield data
        finally:
            # Close the pipeline's generator now (it closes the upstream), not at collection.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def reply_events(self) -> tuple[list[tuple[float, dict[str, Any]]], bool] | None:
        """A stream's events (offset, event) and whether it ended (`message_stop` or `error`);
        None when the answer was not a stream."""
        if self.reply_reads is None:
            return None
        decoder = SSEDecoder()
        events: list[tuple[float, dict[str, Any]]] = []
        ended = False
        for offset, data in list(self.reply_reads):
            for sse in decoder.decode(data):
                event = _json_object(sse.data)
                events.append((offset, event))
                ended = ended or event.get("type") in ("message_stop", "error")
        return events, ended

    # -- the upstream side (the recording transport) ---------------------------------------

    def upstream_request(
        self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> None:
        previous = self.upstream
        if previous is not None:  # the upstream client is retrying: keep what the try got
            outcome = previous.error or f"answered {previous.status}"
            self.upstream_retries.append(f"{previous.sent_ms:.0f} ms: {outcome}")
        self.upstream = UpstreamTrace(method, url, list(headers), body, sent_ms=self.ms())
        self.upstream_first_byte_ms = None

    def next_turn(self) -> None:
        """The upstream is asked again for the same answer: what it said so far is a turn,
        not a try (`turns`)."""
        if self.upstream is not None:
            self.turns.append(self.upstream)
            self.upstream = None

    def upstream_response(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        if self.upstream is not None:
            self.upstream.status = status
            self.upstream.response_ms = self.ms()
            self.upstream.response_headers = list(headers)

    def upstream_chunk(self, data: bytes) -> None:
        offset = self.ms()
        if self.upstream_first_byte_ms is None:
            self.upstream_first_byte_ms = offset
        if self.upstream is not None:
            self.upstream.chunks.append((offset, data))

    def upstream_failed(self, message: str) -> None:
        if self.upstream is not None and self.upstream.error is None:
            self.upstream.error = message

    def upstream_done(self) -> None:
        if self.upstream is not None:
            self.upstream.complete = True

    def finish(self) -> None:
        if self.end_ms is None:
            self.end_ms = self.ms()


def _json_object(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {"type": "unparsed", "data": data}
    return value if isinstance(value, dict) else {"type": "unparsed", "data": data}
