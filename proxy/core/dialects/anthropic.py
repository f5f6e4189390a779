"""Anthropic's own Messages API (`POST .../v1/messages`): `mode = "anthropic"`, passed through.

The body goes as the client sent it with the routed model (`passthrough`), and the reply comes
back as the upstream sent it; the client's API version, betas and profile header go along.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ...models.anthropic import MessagesRequest
from .. import providers
from ..context import ReplyContext
from ..endpoint import Address, Endpoint
from ..passthrough import (
    PassthroughStream,
    forward_body,
    forward_headers,
    message_from_upstream,
)
from ..request import RequestOptions
from ..source import EventSource
from .base import Built, Dialect, UpstreamConfig

ANTHROPIC_VERSION = "2023-06-01"
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta", "anthropic-user-profile-id")
"""What a pass-through upstream hears of the client's headers: the API version, the betas and
the user profile it asked for (the SDK sends `user_profile_id` as a header). Its key and
anything else stay here."""


class Anthropic(Dialect):
    name = "anthropic"
    path = "/messages"
    under_base_path = False  # `/v1/messages` is found under any base URL

    def address(self, endpoint: Endpoint) -> Address:
        headers = {
            "anthropic-version": ANTHROPIC_VERSION,
            **providers.anthropic_headers(endpoint.host, endpoint.api_key),
        }
        return Address(providers.messages_url(endpoint.base_url), headers)

    def forwarded(
        self, client_headers: Mapping[str, str], options: RequestOptions
    ) -> dict[str, str]:
        sent = {k: client_headers[k] for k in FORWARDED_HEADERS if k in client_headers}
        return forward_headers(sent, options.passthrough)

    def options(
        self, upstream: UpstreamConfig, model: str, switches: RequestOptions
    ) -> RequestOptions:
        # No translation rules: what its server is spared of the request instead.
        return replace(switches, model=model, passthrough=upstream.passthrough_profile())

    def listing(self, endpoint: Endpoint) -> Address | None:
        address = self.address(endpoint)
        base, _, query = address.url.partition("?")
        if query:
            return None
        return Address(base.removesuffix("/messages") + "/models", address.headers)

    def build(
        self,
        data: dict[str, Any],
        request: MessagesRequest,
        options: RequestOptions,
        message_id: str,
    ) -> Built:
        body, dropped = forward_body(data, options.model, options.passthrough)
        return Built(body, ReplyContext(request.model, message_id), dropped)

    def reply(self, data: Any, ctx: ReplyContext, options: RequestOptions) -> dict[str, Any]:
        return message_from_upstream(data)

    def events(self, ctx: ReplyContext, options: RequestOptions) -> EventSource:
        return PassthroughStream()


ANTHROPIC = Anthropic()
