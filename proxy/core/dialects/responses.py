"""The OpenAI Responses API (`POST .../responses`): `mode = "responses"` (`core/responses`)."""

from __future__ import annotations

from typing import Any

from ...models.anthropic import MessagesRequest
from ..context import ReplyContext
from ..endpoint import Address, Endpoint
from ..providers import Profile, auth_headers
from ..request import OpenAIRequest, RequestOptions
from ..responses.output import chat_usage
from ..responses.reply import translate_reply
from ..responses.request import translate_request
from ..responses.stream import ResponsesStreamTranslator
from ..responses.upstreams import azure_deployment, responses_url
from ..source import EventSource
from .base import Translating, text_estimate


class Responses(Translating):
    name = "responses"
    path = "/responses"

    def address(self, endpoint: Endpoint) -> Address:
        profile = endpoint.profile
        url = responses_url(endpoint.base_url, profile.name, endpoint.api_version)
        return Address(url, auth_headers(profile, endpoint.api_key))

    def upstream_model(self, base_url: str, profile: Profile, model: str) -> str:
        # Azure's Responses route is the resource's: the deployment goes in the body instead.
        deployment = azure_deployment(base_url) if profile.name == "azure" else None
        return deployment or model

    def translate(self, request: MessagesRequest, options: RequestOptions) -> OpenAIRequest:
        return translate_request(request, options)

    def reply(self, data: Any, ctx: ReplyContext, options: RequestOptions) -> dict[str, Any]:
        estimate = text_estimate(_output_characters(data))
        # The carrier scope is the request's profile, as `translate_request` used it.
        return translate_reply(data, ctx, estimate, scope=options.profile.name)

    def events(self, ctx: ReplyContext, options: RequestOptions) -> EventSource:
        return ResponsesStreamTranslator(ctx, scope=options.profile.name)

    def usage(self, data: Any) -> dict[str, Any] | None:
        return chat_usage(data.get("usage")) if isinstance(data, dict) else None


def _output_characters(data: Any) -> int:
    """Characters of the output text of a Responses body, however odd its shape."""
    output = data.get("output") if isinstance(data, dict) else None
    total = 0
    for item in output if isinstance(output, list) else ():
        content = item.get("content") if isinstance(item, dict) else None
        for part in content if isinstance(content, list) else ():
            text = part.get("text") if isinstance(part, dict) else None
            total += len(text) if isinstance(text, str) else 0
    return total


RESPONSES = Responses()
