"""Pydantic models of the Anthropic Messages API request (PROTOCOL.md 1.2-1.6).

Only the client's input is validated: it is what can be malformed. Unknown fields are
kept (clients add fields monthly), unknown block types are rejected with the path of
the offending block. Union members are tagged ``type=<name>`` so that error paths can
drop the tags and read like the API's own (``messages.0.content.1.source``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

TAG_PREFIX = "type="
AT = "at"
"""Error context key: path parts below the validated field, for a check that sees a whole list
(`validation.describe` appends them, so the message names the block, not the list)."""
PAYLOADS_ELIDED = "payloads_elided"
"""Validation context key: base64 payloads may be a journal's stand-ins (`replay diff` re-runs
recorded requests whose payloads were elided, and checked, when recorded)."""


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")


def _text_to_blocks(value: Any) -> Any:
    # A bare string is one text block; normalising here keeps error paths free of union noise.
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


class CacheControl(Model):
    type: str = "ephemeral"
    ttl: str | None = None


# -- sources -----------------------------------------------------------------------------


_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _base64(data: str, info: ValidationInfo) -> str:
    """Anthropic refuses data that is not base64 (PROTOCOL.md 1.4). Checked without decoding:
    deleting the alphabet must leave just the padding, five times faster than decoding the
    megabytes of a screenshot."""
    if info.context and info.context.get(PAYLOADS_ELIDED):
        return data
    padding = 2 if data.endswith("==") else 1 if data.endswith("=") else 0
    if (
        data.isascii()
        and len(data) % 4 == 0
        and data.encode("ascii").translate(None, _BASE64_ALPHABET) == b"=" * padding
    ):
        return data
    raise PydanticCustomError("base64", "invalid base64 data")


class Base64Source(Model):
    type: Literal["base64"]
    media_type: str
    data: str

    _data = field_validator("data")(_base64)


def _image_not_empty(data: str) -> str:
    if not data:
        raise PydanticCustomError("image_empty", "image cannot be empty")
    return data


class ImageBase64Source(Base64Source):
    # The API's list; its error reads as pydantic's literal error does.
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]

    _not_empty = field_validator("data")(_image_not_empty)


class UrlSource(Model):
    type: Literal["url"]
    url: str


class FileSource(Model):
    type: Literal["file"]
    file_id: str


class PlainTextSource(Model):
    type: Literal["text"]
    data: str
    media_type: str = "text/plain"


class ContentSource(Model):
    type: Literal["content"]
    content: list[TextBlock | ImageBlock]

    _blocks = field_validator("content", mode="before")(_text_to_blocks)


def _tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"{TAG_PREFIX}{kind}" if isinstance(kind, str) else None


ImageSource = Annotated[
    Annotated[ImageBase64Source, Tag("type=base64")]
    | Annotated[UrlSource, Tag("type=url")]
    | Annotated[FileSource, Tag("type=file")],
    Discriminator(_tag),
]
DocumentSource = Annotated[
    Annotated[Base64Source, Tag("type=base64")]
    | Annotated[PlainTextSource, Tag("type=text")]
    | Annotated[ContentSource, Tag("type=content")]
    | Annotated[UrlSource, Tag("type=url")]
    | Annotated[FileSource, Tag("type=file")],
    Discriminator(_tag),
]


# -- content blocks ----------------------------------------------------------------------


class TextBlock(Model):
    type: Literal["text"] = "text"
    text: str
    cache_control: CacheControl | None = None


class ImageBlock(Model):
    type: Literal["image"] = "image"
    source: ImageSource
    cache_control: CacheControl | None = None


class DocumentBlock(Model):
    type: Literal["document"] = "document"
    source: DocumentSource
    title: str | None = None
    context: str | None = None
    cache_control: CacheControl | None = None


class SearchResultBlock(Model):
    type: Literal["search_result"] = "search_result"
    source: str
    title: str
    content: list[TextBlock]
    cache_control: CacheControl | None = None


class ToolReferenceBlock(Model):
    type: Literal["tool_reference"] = "tool_reference"
    tool_name: str | None = None


ToolResultContentBlock = Annotated[
    Annotated[TextBlock, Tag("type=text")]
    | Annotated[ImageBlock, Tag("type=image")]
    | Annotated[DocumentBlock, Tag("type=document")]
    | Annotated[SearchResultBlock, Tag("type=search_result")]
    | Annotated[ToolReferenceBlock, Tag("type=tool_reference")],
    Discriminator(_tag),
]


class ToolResultBlock(Model):
    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str
    content: list[ToolResultContentBlock] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None

    _blocks = field_validator("content", mode="before")(_text_to_blocks)


class ContainerUploadBlock(Model):
    type: Literal["container_upload"] = "container_upload"
    file_id: str


class ThinkingBlock(Model):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(Model):
    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str


class ToolUseBlock(Model):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ServerToolUseBlock(Model):
    type: Literal["server_tool_use", "mcp_tool_use"]
    id: str
    name: str
    input: Any = None


SERVER_RESULT_TYPES = (
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "mcp_tool_result",
)


class MidConversationSystemBlock(Model):
    """System text placed inside the conversation (2026 API); travels as system text."""

    type: Literal["mid_conv_system"] = "mid_conv_system"
    content: list[TextBlock]

    _blocks = field_validator("content", mode="before")(_text_to_blocks)

    @property
    def text(self) -> str:
        return "\n\n".join(block.text for block in self.content if block.text)


class ServerToolResultBlock(Model):
    """Results of tools Anthropic runs itself; an OpenAI upstream has nothing to match them."""

    type: Literal[
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "mcp_tool_result",
    ]
    tool_use_id: str
    content: Any = None


ContentBlock = Annotated[
    Annotated[TextBlock, Tag("type=text")]
    | Annotated[ImageBlock, Tag("type=image")]
    | Annotated[DocumentBlock, Tag("type=document")]
    | Annotated[SearchResultBlock, Tag("type=search_result")]
    | Annotated[ToolResultBlock, Tag("type=tool_result")]
    | Annotated[ContainerUploadBlock, Tag("type=container_upload")]
    | Annotated[ThinkingBlock, Tag("type=thinking")]
    | Annotated[MidConversationSystemBlock, Tag("type=mid_conv_system")]
    | Annotated[RedactedThinkingBlock, Tag("type=redacted_thinking")]
    | Annotated[ToolUseBlock, Tag("type=tool_use")]
    | Annotated[ServerToolUseBlock, Tag("type=server_tool_use")]
    | Annotated[ServerToolUseBlock, Tag("type=mcp_tool_use")]
    | Annotated[ServerToolResultBlock, Tag("type=web_search_tool_result")]
    | Annotated[ServerToolResultBlock, Tag("type=web_fetch_tool_result")]
    | Annotated[ServerToolResultBlock, Tag("type=code_execution_tool_result")]
    | Annotated[ServerToolResultBlock, Tag("type=bash_code_execution_tool_result")]
    | Annotated[ServerToolResultBlock, Tag("type=text_editor_code_execution_tool_result")]
    | Annotated[ServerToolResultBlock, Tag("type=tool_search_tool_result")]
    | Annotated[ServerToolResultBlock, Tag("type=mcp_tool_result")],
    Discriminator(_tag),
]


class Message(Model):
    # "system" is what Claude Code sends for its environment block inside `messages`.
    role: Literal["user", "assistant", "system"]
    content: list[ContentBlock]

    _blocks = field_validator("content", mode="before")(_text_to_blocks)


# -- tools -------------------------------------------------------------------------------


class CustomTool(Model):
    type: Literal["custom"] | None = None
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: CacheControl | None = None


class BuiltinTool(Model):
    """An Anthropic-defined tool (`bash_20250124`, `web_search_20250305`, ...): no schema sent."""

    type: str
    name: str
    cache_control: CacheControl | None = None


def _tool_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "type=custom" if kind in (None, "custom") else "type=builtin"


Tool = Annotated[
    Annotated[CustomTool, Tag("type=custom")] | Annotated[BuiltinTool, Tag("type=builtin")],
    Discriminator(_tool_tag),
]


class ToolChoiceAuto(Model):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(Model):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(Model):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(Model):
    type: Literal["none"]


ToolChoice = Annotated[
    Annotated[ToolChoiceAuto, Tag("type=auto")]
    | Annotated[ToolChoiceAny, Tag("type=any")]
    | Annotated[ToolChoiceTool, Tag("type=tool")]
    | Annotated[ToolChoiceNone, Tag("type=none")],
    Discriminator(_tag),
]


# -- thinking and output -----------------------------------------------------------------


class ThinkingEnabled(Model):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=0)


class ThinkingAdaptive(Model):
    type: Literal["adaptive"]


class ThinkingDisabled(Model):
    type: Literal["disabled"]


Thinking = Annotated[
    Annotated[ThinkingEnabled, Tag("type=enabled")]
    | Annotated[ThinkingAdaptive, Tag("type=adaptive")]
    | Annotated[ThinkingDisabled, Tag("type=disabled")],
    Discriminator(_tag),
]


class OutputConfig(Model):
    effort: str | None = None
    format: dict[str, Any] | None = None


class Metadata(Model):
    user_id: str | None = None


class SystemText(Model):
    type: Literal["text"] = "text"
    text: str
    cache_control: CacheControl | None = None


# -- requests ----------------------------------------------------------------------------


class CountTokensRequest(Model):
    model: str
    messages: list[Message]
    system: list[SystemText] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None

    _system = field_validator("system", mode="before")(_text_to_blocks)


def _conversation_rules(messages: list[Message]) -> list[Message]:
    """The API's checks on the conversation as a whole (PROTOCOL.md 1.3): at least one message,
    and every `tool_result` answering a `tool_use` of the assistant turn just before it.
    Consecutive same-role messages are one turn to the API; `system` ones stand outside turns."""
    if not messages:
        raise PydanticCustomError("messages_empty", "at least one message is required")
    offered: set[str] = set()
    previous = ""
    for index, message in enumerate(messages):
        if message.role == "assistant":
            if previous != "assistant":
                offered = set()
            offered.update(b.id for b in message.content if isinstance(b, ToolUseBlock))
        elif message.role == "user":
            unexpected = [
                (position, block.tool_use_id)
                for position, block in enumerate(message.content)
                if isinstance(block, ToolResultBlock) and block.tool_use_id not in offered
            ]
            if unexpected:
                where = (index, "content", unexpected[0][0])
                raise PydanticCustomError(
                    "tool_result_unpaired",
                    "unexpected `tool_use_id` found in `tool_result` blocks: {ids}. Each "
                    "`tool_result` block must have a corresponding `tool_use` block in the "
                    "previous message.",
                    {"ids": ", ".join(i for _, i in unexpected), AT: where},
                )
        else:
            continue
        previous = message.role
    return messages


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=0)
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: Metadata | None = None
    stream: bool = False
    service_tier: str | None = None
    context_management: dict[str, Any] | None = None

    # Only here: count_tokens is answered locally, nothing is paid for.
    _messages = field_validator("messages")(_conversation_rules)
