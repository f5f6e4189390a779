"""What the pipeline tells its listeners (console lines, the dashboard, the journal).

A failing listener is logged and dropped from that event, never raised into a request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .journal.trace import Trace
    from .pricing import Cost
    from .resilience.failover import Attempt

log = logging.getLogger("claude_bridge.events")


@dataclass
class Exchange:
    """One client request and its answer, filled in as it goes."""

    id: str
    route: str
    client_model: str = ""
    upstream: str = ""
    """The name of the upstream it was routed to (`default` unless a rule named another)."""
    upstream_model: str = ""
    stream: bool = False
    started: float = 0.0
    first_byte: float | None = None
    finished: float | None = None
    status: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    """Part of `output_tokens`, as the upstream counted it."""
    upstream_cost: float | None = None
    """The cost the upstream reported (OpenRouter's `usage.cost`), in USD."""
    cost: Cost | None = None
    """Priced by the pipeline just before "finish" (`pricing.Pricing`)."""
    session_id: str | None = None
    """The client's conversation (Claude Code's `x-claude-code-session-id`)."""
    agent_id: str | None = None
    """The subagent of that conversation that asked (`x-claude-code-agent-id`), if one did."""
    routed_by: str = ""
    """What chose the upstream and model: a rule, a tier, a gateway id (`routing.Route.why`)."""
    pings: int = 0
    """`ping` events sent while the upstream was silent."""
    searches: int = 0
    """Web searches the proxy ran for the `web_search` tool (`websearch.loop`)."""
    search_failures: int = 0
    """Of those, the ones that became an error result (backend down, rate-limited, ...)."""
    stop_reason: str | None = None
    error_type: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    # Characters of text, thinking and tool input streamed so far: live progress for the
    # dashboard, which reads it a few times a second (no event per chunk).
    output_chars: int = 0
    cancelled: bool = False
    """The client left before the answer ended (a stream it closed): the token counts are
    what had streamed by then."""
    attempts: list[Attempt] = field(default_factory=list)
    """Each target (and key) tried, in order, when the route is a fallback chain or its
    upstream has several keys (`resilience.failover`); `upstream` and `upstream_model` are
    then the target that answered."""
    # Set by the journal's recorder on "start" when recording is on; the pipeline tells it
    # what it sees (one `is not None` check each when off).
    trace: Trace | None = field(default=None, repr=False, compare=False)

    @property
    def output_so_far(self) -> int:
        """Output tokens: the upstream's count once known, else an estimate (4 characters a
        token) from what has streamed so far."""
        return self.output_tokens or (self.output_chars + 3) // 4

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else self.finished - self.started

    @property
    def ttft(self) -> float | None:
        return None if self.first_byte is None else self.first_byte - self.started


def delta_chars(delta: Mapping[str, Any]) -> int:
    """The characters a `content_block_delta`'s delta adds to the output (signatures: none)."""
    text = delta.get("text") or delta.get("thinking") or delta.get("partial_json") or ""
    return len(text) if isinstance(text, str) else 0


Listener = Callable[[str, Exchange], None]
"""Called with ("start" | "routed" | "first_byte" | "finish", exchange).

The exchange is the live object: a listener that keeps it sees later fields (first byte,
tokens so far) change under it. Listeners run on the event loop inside the request: they must
be O(1) and must not block.
"""


class Bus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        # Those of each kind some listener subscribed to only, in the order they subscribed:
        # a request publishes three events, and most listeners want one or two of them.
        self._of_kind: dict[str, list[Listener]] = {}

    def subscribe(self, listener: Listener, kinds: Collection[str] | None = None) -> None:
        """`listener` hears every event, or those of `kinds` only."""
        if kinds is None:
            self._listeners.append(listener)
            for listeners in self._of_kind.values():
                listeners.append(listener)
            return
        for kind in kinds:
            self._of_kind.setdefault(kind, list(self._listeners)).append(listener)

    def publish(self, kind: str, exchange: Exchange) -> None:
        for listener in self._of_kind.get(kind, self._listeners):
            try:
                listener(kind, exchange)
            except Exception:
                log.exception("event listener %r failed on %s", listener, kind)
