"""Pydantic models of the OpenAI Chat Completions replies we read (PROTOCOL.md 6.2, 6.3).

Loose by design: every field optional, unknown fields kept, because each server adds its own
(`reasoning_content`, `x_groq`, `timings`, `native_finish_reason`, `obfuscation`...). Fields
that only describe the reply (`Lenient`: ids, usage, reasons, reasoning) are dropped when an
upstream sends them malformed; those that carry it (choices, content, tool calls) must be
right, or the answer is refused as one that cannot be translated.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

T = TypeVar("T")


class _NoneOnError:
    """Makes a field's value None where it does not validate: inside pydantic-core, where a
    Python wrap validator would be called for every field of every reply."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.with_default_schema(handler(source), default=None, on_error="default")


Lenient = Annotated[T | None, _NoneOnError()]
"""An optional field read as None when the upstream sent something else in it."""


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionCall(Model):
    name: str | None = None
    arguments: str | None = None


class ToolCall(Model):
    index: Lenient[int] = None
    id: str | None = None
    type: Lenient[str] = None
    function: FunctionCall | None = None


class ChatMessage(Model):
    role: Lenient[str] = None
    content: str | None = None
    refusal: Lenient[str] = None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: Lenient[str] = None
    reasoning: Lenient[str] = None
    reasoning_details: Lenient[list[Any]] = None


class Choice(Model):
    index: Lenient[int] = None
    message: ChatMessage | None = None
    finish_reason: Lenient[str] = None
    native_finish_reason: Lenient[str] = None
    stop_reason: Any = None


class ChatCompletion(Model):
    id: Lenient[str] = None
    model: Lenient[str] = None
    choices: list[Choice] = []
    usage: Lenient[dict[str, Any]] = None
