"""One exchange planned: which upstream, in which dialect, with which body; and the way back.

`plan` is what `serve` (`Pipeline.prepare`, in a worker for the biggest bodies), `claude-bridge
translate`, `replay diff` and `--upstream-replay` all go through, so that the offline answers
are the served ones: read and validate the client's body, route it, choose the upstream's
dialect, build the upstream body. `reply_message` and `event_source` turn the upstream's answer
back with the dialect the plan chose. No I/O here: the pipeline sends what a plan says.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from .config import Settings, UpstreamSettings
from .core import dialects
from .core.catalog import Limits
from .core.context import ReplyContext
from .core.dialects import Dialect
from .core.errors import BridgeError, UpstreamError
from .core.features import PLAIN, Features, request_features
from .core.ids import new_message_id
from .core.request import RequestOptions
from .core.routing import Route, route
from .core.session import session_id
from .core.source import EventSource
from .core.validation import parse_object, validate
from .core.wire import dumps
from .models.anthropic import MessagesRequest
from .windows import configured

log = logging.getLogger("claude_bridge.plan")


@dataclass(frozen=True)
class Asked:
    """A client's Messages body, read and validated: what every plan for it starts from."""

    data: dict[str, Any]
    """Its JSON as sent (pass-through forwards it)."""
    request: MessagesRequest
    session_id: str | None
    size: int
    """The body's length in bytes."""
    headers: Mapping[str, str]
    """The client's headers."""

    @cached_property
    def features(self) -> Features:
        """What routing rules may ask of it (a walk of every block: made for rules only)."""
        return request_features(self.request, self.size, self.headers)


def read(raw: bytes, client_headers: Mapping[str, str], *, payloads_elided: bool = False) -> Asked:
    """Parse and validate a Messages body (`payloads_elided`: a recording's, whose base64
    payloads the journal elided)."""
    data = parse_object(raw)
    session = session_id(client_headers, data)
    request = validate(data, MessagesRequest, payloads_elided=payloads_elided)
    return Asked(data, request, session, len(raw), client_headers)


def routed(settings: Settings, client_model: str, features: Features = PLAIN) -> Route:
    """Which upstream and model a request for `client_model` (holding `features`) goes to."""
    return route(
        client_model,
        big_model=settings.big_chain(),
        small_model=settings.small_chain(),
        rules=settings.rules(),
        upstreams=settings.upstreams.keys(),
        features=features,
    )


@dataclass(frozen=True)
class Plan:
    """One request made ready for one upstream. Picklable: a worker process makes it for the
    biggest bodies (`offloaded_plan`)."""

    model: str
    """The model the client asked for."""
    stream: bool
    route: Route
    """The upstream and model it goes to, what chose them, and where it may go next."""
    dialect: str
    """The name of the dialect the upstream is spoken to in (`core.dialects`)."""
    session_id: str | None
    body: dict[str, Any] | bytes
    """What goes upstream; serialized already when a worker made it (a dict would cost as
    much to unpickle)."""
    ctx: ReplyContext
    """What translating the reply needs (the message id, tool names, estimates...)."""
    options: RequestOptions
    dropped: list[str]
    """What could not be expressed upstream."""

    @property
    def upstream(self) -> str:
        return self.route.upstream

    @property
    def upstream_model(self) -> str:
        return self.route.model

    @property
    def routed_by(self) -> str:
        return self.route.why

    @property
    def speaker(self) -> Dialect:
        return dialects.by_name(self.dialect)


def request_options(
    settings: Settings,
    endpoint: UpstreamSettings,
    dialect: Dialect,
    model: str,
    limits: Limits | None = None,
) -> RequestOptions:
    """How a request for `model` goes to `endpoint` in `dialect`: the switches, with what the
    dialect takes of the upstream (`Dialect.options`); `max_tokens` lowered to the model's
    configured output limit (`limits`)."""
    switches = RequestOptions(
        model=model,
        stream_usage=settings.stream_usage,
        reasoning_effort=settings.reasoning_effort,
        max_tokens_cap=settings.max_tokens_cap or (limits.max_output_tokens if limits else None),
        native_web_search=bool(settings.web_search and settings.web_search.backend == "upstream"),
    )
    return dialect.options(endpoint, model, switches)


def plan(
    raw: bytes | Asked,
    settings: Settings,
    endpoints: Mapping[str, UpstreamSettings],
    client_headers: Mapping[str, str],
    *,
    to: Route | None = None,
    dialect: Dialect | None = None,
    message_id: str | None = None,
) -> Plan:
    """Plan the exchange for a client's body (or one read already): routed as its model and
    features say, or to `to` (a failover's next target); in the upstream's dialect unless
    told; a new message id unless given (a second upstream turn for the same client message
    keeps the first's)."""
    asked = raw if isinstance(raw, Asked) else read(raw, client_headers)
    # Only a rule looks at the features: without rules they are not made.
    to = to or routed(settings, asked.request.model, asked.features if settings.routes else PLAIN)
    endpoint = endpoints[to.upstream]
    dialect = dialect or dialects.choose(
        endpoint.mode, endpoint.provider, endpoint.base_url, to.model
    )
    limits = configured(settings, to.upstream, to.model)
    options = request_options(settings, endpoint, dialect, to.model, limits)
    return build(asked, to, dialect, options, message_id or new_message_id())


def build(
    asked: Asked, to: Route, dialect: Dialect, options: RequestOptions, message_id: str
) -> Plan:
    """The plan once every choice is made: `replay diff` makes the recorded ones."""
    built = dialect.build(asked.data, asked.request, options, message_id)
    return Plan(
        model=asked.request.model,
        stream=asked.request.stream,
        route=to,
        dialect=dialect.name,
        session_id=asked.session_id,
        body=built.body,
        ctx=built.ctx,
        options=options,
        dropped=built.dropped,
    )


def offloaded_plan(
    raw: bytes,
    settings: Settings,
    endpoints: Mapping[str, UpstreamSettings],
    client_headers: Mapping[str, str],
) -> tuple[bytes, Plan]:
    """`plan` as a worker process runs it: the upstream body serialized there too, and sent
    back on its own (`offload.Job`)."""
    planned = plan(raw, settings, endpoints, client_headers)
    assert isinstance(planned.body, dict)
    return dumps(planned.body), replace(planned, body=b"")


def reply_message(data: Any, planned: Plan) -> dict[str, Any]:
    """An upstream JSON answer -> the client's message, in the plan's dialect."""
    try:
        return planned.speaker.reply(data, planned.ctx, planned.options)
    except BridgeError:
        raise
    except Exception as exc:  # whatever the upstream sent, the client gets an Anthropic answer
        log.exception("translating the upstream answer failed")
        raise UpstreamError(
            f"upstream answer could not be translated ({type(exc).__name__})", status=502
        ) from None


def event_source(planned: Plan) -> EventSource:
    """What turns the upstream's stream into the client's, in the plan's dialect."""
    return planned.speaker.events(planned.ctx, planned.options)


def upstream_usage(data: Any, planned: Plan) -> dict[str, Any] | None:
    """A JSON answer's own usage, for the accounting (reasoning tokens, reported cost)."""
    return planned.speaker.usage(data)
