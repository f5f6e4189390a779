"""OpenAI Chat Completions (`POST .../chat/completions`): `mode = "openai"`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ...models.anthropic import MessagesRequest
from ...models.openai import ChatCompletion
from .. import providers
from ..context import ReplyContext
from ..endpoint import Address, Endpoint
from ..errors import UpstreamError
from ..nulls import NullRemovingSource
from ..request import OpenAIRequest, RequestOptions, translate_request
from ..response import translate_response
from ..source import EventSource
from ..stream import StreamTranslator
from ..validation import describe
from .base import Translating, text_estimate


class Chat(Translating):
    name = "openai"
    path = "/chat/completions"

    def address(self, endpoint: Endpoint) -> Address:
        profile = endpoint.profile
        url = providers.chat_completions_url(endpoint.base_url, profile, endpoint.api_version)
        return Address(url, providers.auth_headers(profile, endpoint.api_key))

    def translate(self, request: MessagesRequest, options: RequestOptions) -> OpenAIRequest:
        return translate_request(request, options)

    def reply(self, data: Any, ctx: ReplyContext, options: RequestOptions) -> dict[str, Any]:
        try:
            completion = ChatCompletion.model_validate(data)
        except ValidationError as exc:
            raise UpstreamError(
                f"upstream answer is not a chat completion: {describe(exc)}", status=502
            ) from None
        text = sum(len(c.message.content or "") for c in completion.choices if c.message)
        return translate_response(completion, ctx, output_estimate=text_estimate(text))

    def events(self, ctx: ReplyContext, options: RequestOptions) -> EventSource:
        if ctx.added_nulls:  # strict schemas made optional properties nullable: take those out
            return NullRemovingSource(StreamTranslator(ctx), ctx.added_nulls)
        return StreamTranslator(ctx)


CHAT = Chat()
