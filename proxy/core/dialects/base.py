"""What a dialect is: everything about one upstream API that differs from the others.

A dialect addresses an upstream (`address`: URL and headers), builds the upstream body from the
validated Anthropic request (`build`), and turns the answer back into Anthropic's: a JSON reply
(`reply`), a stream (`events`, an `EventSource`), an error body (`error`). The pipeline, the
`translate` command, `replay diff` and the recorder all go through these, so a further dialect is
one module with a `Dialect` subclass, registered in `dialects/__init__.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, ClassVar, Protocol

from ...models.anthropic import MessagesRequest
from ..context import ReplyContext
from ..endpoint import Address, Endpoint
from ..errors import UpstreamError, from_upstream_response
from ..passthrough_profiles import PassthroughProfile
from ..providers import Profile, resolve
from ..request import OpenAIRequest, RequestOptions
from ..source import EventSource
from ..tokens import count_request_tokens


@dataclass
class Built:
    """One request made ready for a dialect's upstream."""

    body: dict[str, Any]
    ctx: ReplyContext
    """What translating the reply needs."""
    dropped: list[str] = field(default_factory=list)
    """What could not be expressed upstream."""


class UpstreamConfig(Protocol):
    """What a dialect reads of an upstream's settings (`config.UpstreamSettings`)."""

    provider: str | None
    base_url: str

    def passthrough_profile(self) -> PassthroughProfile: ...


class Dialect(ABC):
    name: ClassVar[str]
    """Its `mode` in the settings and its name in recordings."""
    path: ClassVar[str]
    """The endpoint it adds under a base URL (`diagnose` warns of a base URL ending in it)."""
    under_base_path: ClassVar[bool] = True
    """Its API lives under the provider's base path (`/v1`, OpenRouter's `/api/v1`...)."""

    @abstractmethod
    def address(self, endpoint: Endpoint) -> Address:
        """Where this dialect's requests to `endpoint` go, and their own headers (the
        transport adds content type, user agent and a URL's Basic auth)."""

    def forwarded(
        self, client_headers: Mapping[str, str], options: RequestOptions
    ) -> dict[str, str]:
        """What of the client's headers goes upstream with each request (as `options` want
        them): nothing by default."""
        return {}

    def listing(self, endpoint: Endpoint) -> Address | None:
        """Where the upstream lists its models (`GET`, `data[].id`), if it can say."""
        base, _, query = endpoint.base_url.partition("?")
        if query or "/openai/deployments/" in base:  # Azure: one model a deployment
            return None
        return Address(base.rstrip("/") + "/models", self.address(endpoint).headers)

    def options(
        self, upstream: UpstreamConfig, model: str, switches: RequestOptions
    ) -> RequestOptions:
        """How a request for `model` goes to `upstream`: the settings' `switches` with the
        provider's rules (`providers.resolve`) and the model the body names."""
        profile = resolve(upstream.provider, upstream.base_url, model)
        return replace(
            switches, model=self.upstream_model(upstream.base_url, profile, model), profile=profile
        )

    def upstream_model(self, base_url: str, profile: Profile, model: str) -> str:
        """The `model` the body names, for a routed `model` (Azure may want its deployment)."""
        return model

    @abstractmethod
    def build(
        self,
        data: dict[str, Any],
        request: MessagesRequest,
        options: RequestOptions,
        message_id: str,
    ) -> Built:
        """The upstream body for the client's `request` (`data`: its JSON as sent)."""

    @abstractmethod
    def reply(self, data: Any, ctx: ReplyContext, options: RequestOptions) -> dict[str, Any]:
        """A 2xx JSON answer -> the client's Anthropic message (raises `UpstreamError`)."""

    @abstractmethod
    def events(self, ctx: ReplyContext, options: RequestOptions) -> EventSource:
        """What turns the upstream's SSE `data` fields into the client's events."""

    def usage(self, data: Any) -> dict[str, Any] | None:
        """A JSON answer's own usage in Chat Completions' shape (reasoning tokens, cost)."""
        usage = data.get("usage") if isinstance(data, dict) else None
        return usage if isinstance(usage, dict) else None

    def error(self, status: int, body: str, headers: Mapping[str, str], host: str) -> UpstreamError:
        """An upstream's non-2xx answer -> the Anthropic error the client gets."""
        return from_upstream_response(status, body, dict(headers), host)


class Translating(Dialect):
    """A dialect whose body is translated from the Anthropic request (`translate`)."""

    @abstractmethod
    def translate(self, request: MessagesRequest, options: RequestOptions) -> OpenAIRequest:
        """The upstream request, its tool names and what it could not express."""

    def build(
        self,
        data: dict[str, Any],
        request: MessagesRequest,
        options: RequestOptions,
        message_id: str,
    ) -> Built:
        translated = self.translate(request, options)
        ctx = reply_context(request, translated, message_id)
        return Built(translated.body, ctx, translated.dropped)


def rough_tokens(text: str) -> int:
    """Four characters a token: free, and close enough for `message_start`'s estimate."""
    return len(text) // 4 + 1


def reply_context(
    request: MessagesRequest, translated: OpenAIRequest, message_id: str
) -> ReplyContext:
    """What translating the reply to a translated `request` needs."""
    return ReplyContext(
        model=request.model,
        message_id=message_id,
        tool_names=translated.tool_names,
        stop_sequences=tuple(request.stop_sequences or ()),
        input_count=partial(count_request_tokens, request, rough_tokens),
        added_nulls=translated.added_nulls,
    )


def text_estimate(characters: int) -> int:
    """Output tokens guessed from the characters of a JSON answer's text, for upstreams that
    report no usage."""
    return characters // 4
