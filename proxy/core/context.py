"""What translating a reply needs to know about the request it answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .ids import ToolNames
from .nulls import AddedNulls


@dataclass(frozen=True)
class ReplyContext:
    model: str
    """The model the client asked for; replies echo it, whatever served them."""
    message_id: str
    tool_names: ToolNames = field(default_factory=ToolNames)
    stop_sequences: tuple[str, ...] = ()
    input_count: int | Callable[[], int] = 0
    """Input tokens counted locally, or how to count them: a body's count is made only when
    read (`input_estimate`)."""
    added_nulls: AddedNulls = field(default_factory=AddedNulls)
    """Where the request's strict schemas made optional properties nullable: those nulls are
    taken out of the answer (`nulls.py`)."""

    @cached_property
    def input_estimate(self) -> int:
        """Stands in until (or unless) the upstream reports usage: a stream's `message_start`
        needs it; a JSON answer only without usage."""
        count = self.input_count
        return count if isinstance(count, int) else count()

    def __getstate__(self) -> dict[str, Any]:
        # Counted where it is pickled (a worker process): the count needs the whole request.
        return {**self.__dict__, "input_count": self.input_estimate}


def message_start(ctx: ReplyContext) -> list[dict[str, Any]]:
    """What every translated stream opens with: `message_start` (the requested model, the
    local input estimate until the upstream reports usage) and a first `ping`."""
    message: dict[str, Any] = {
        "id": ctx.message_id,
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": ctx.input_estimate,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
        },
    }
    return [{"type": "message_start", "message": message}, {"type": "ping"}]
