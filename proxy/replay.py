"""The three replays of recorded exchanges (mitmproxy's client and server playback, plus one).

* `diff_record`: offline. The recorded client request and the recorded upstream answer go
  through the *current* translation core (the plan `serve` makes, `plan.build`) with the
  recorded routing, dialect, options and message id; what would now differ in the upstream
  request or in the client's reply is returned as unified diffs. No network, no key.
* `send_records`: re-send recorded client requests to a claude-bridge (in process or running)
  with `x-claude-bridge-replayed-from`, so the new exchanges are recorded as replays.
* `ReplayTransport`: the upstream seam answered from a recording, matched by a canonical hash
  of the upstream request: a user's bug reproduced with no network and no API key.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from .core import dialects, providers
from .core.errors import BridgeError, InvalidRequest
from .core.request import RequestOptions
from .core.routing import DEFAULT_UPSTREAM, Route
from .core.sse import SSEDecoder
from .core.stream import run_sse
from .journal.records import (
    REPLAYED_FROM_HEADER,
    SECRET_HEADERS,
    Record,
    Upstream,
    body_bytes,
    chunk_data,
    elide_base64,
)
from .models.anthropic import MessagesRequest
from .plan import Plan, build, event_source, read, reply_message
from .websearch.recorded import recorded_searches

log = logging.getLogger("claude_bridge.replay")

Outcome = Literal["same", "differs", "skipped"]


# -- offline re-translation ----------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One side of an exchange compared: the upstream request, or the client's reply."""

    name: str
    outcome: Outcome
    recorded: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)
    note: str = ""

    def unified(self, label: str) -> list[str]:
        return list(
            difflib.unified_diff(
                self.recorded,
                self.current,
                f"{label} {self.name} (recorded)",
                f"{label} {self.name} (current code)",
                lineterm="",
            )
        )


@dataclass(frozen=True)
class DiffResult:
    record: Record
    request: Part
    reply: Part

    @property
    def differs(self) -> bool:
        return "differs" in (self.request.outcome, self.reply.outcome)


def _lines(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.splitlines()
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def _event_lines(events: Iterable[dict[str, Any]]) -> list[str]:
    """One event a line; pings left out (their number depends on timing, not on code)."""
    return [
        json.dumps(e, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        for e in events
        if e.get("type") != "ping"
    ]


def _compare(name: str, recorded: list[str], current: list[str], note: str = "") -> Part:
    outcome: Outcome = "same" if recorded == current else "differs"
    return Part(name, outcome, recorded, current, note)


def _elided(value: Any) -> Any:
    return elide_base64(value)[0]


def _recorded_message_id(record: Record) -> str | None:
    if record.routing.message_id:
        return record.routing.message_id
    reply = record.reply
    if reply is not None and isinstance(reply.body, dict) and reply.body.get("type") == "message":
        value = reply.body.get("id")
        return value if isinstance(value, str) else None
    for _, event in (reply.events or []) if reply is not None else []:
        if event.get("type") == "message_start":
            value = event.get("message", {}).get("id")
            return value if isinstance(value, str) else None
    return None


def _options(record: Record, request: MessagesRequest) -> RequestOptions:
    recorded = dict(record.routing.options or {})
    recorded.setdefault("model", record.routing.upstream_model or request.model)
    known = RequestOptions.__dataclass_fields__
    return RequestOptions(**{k: v for k, v in recorded.items() if k in known})


def rerun_request(record: Record) -> Plan | BridgeError:
    """The recorded client body planned today, with the recorded choices: its upstream,
    model, dialect (`routing.mode`), options and message id."""
    raw = body_bytes(record.client.body, record.client.body_text)
    routing = record.routing
    try:
        dialect = dialects.by_name(routing.mode)
    except ValueError as exc:  # a newer claude-bridge's dialect
        return InvalidRequest(f"recorded {exc}")
    try:
        asked = read(raw, {}, payloads_elided=record.elided > 0)
        model = routing.upstream_model or asked.request.model
        to = Route(routing.upstream or DEFAULT_UPSTREAM, model, routing.routed_by or "")
        message_id = _recorded_message_id(record) or "msg_replay"  # so the outputs compare
        return build(asked, to, dialect, _options(record, asked.request), message_id)
    except BridgeError as error:
        return error


def rerun_reply(record: Record, plan: Plan) -> Any:
    """What the client would now get for the recorded upstream answer: a JSON body, or the
    list of stream events. None when the recording cannot tell (no upstream answer)."""
    upstream = record.upstream
    assert upstream is not None and upstream.response is not None
    response = upstream.response
    if response.status >= 300:
        text = body_bytes(response.body, response.body_text).decode("utf-8", "replace")
        host = providers.host_of(upstream.request.url)
        error = plan.speaker.error(response.status, text, response.headers, host)
        return error.body(record.request_id)
    if response.chunks is not None:
        chunks = decoded_chunks(response.headers, [chunk_data(c) for c in response.chunks])
        # Like the pipeline's relay when the upstream broke: what the chunks gave, then `fail`.
        broken = upstream.error is not None and not upstream.complete
        return run_sse(event_source(plan), chunks, _recorded_error(record) if broken else None)
    try:
        return reply_message(response.body, plan)
    except BridgeError as error:
        return error.body(record.request_id)


def decoded_chunks(headers: dict[str, str], chunks: list[bytes]) -> list[bytes]:
    """The chunks as the pipeline reads them: without a gzip (or other) content encoding,
    which the journal keeps, as it keeps the bytes on the wire."""
    if "content-encoding" not in headers:
        return chunks
    try:
        return [httpx.Response(200, headers=headers, content=b"".join(chunks)).content]
    except httpx.DecodingError:
        return chunks


def _recorded_error(record: Record) -> BridgeError:
    if record.error is not None:
        return BridgeError(record.error.message, type=record.error.type)
    return BridgeError(f"upstream connection failed: {record.upstream and record.upstream.error}")


def diff_record(record: Record) -> DiffResult:
    """Re-run one recorded exchange through the current translation; pure and offline."""
    if record.client.body is None and record.client.body_text is None:
        note = "the request was refused before its body was read"
        return DiffResult(
            record,
            Part("upstream request", "skipped", note=note),
            Part("reply", "skipped", note=note),
        )
    rerun = rerun_request(record)
    upstream = record.upstream
    recorded_request: Any = (
        _elided(
            upstream.request.body
            if upstream.request.body is not None
            else upstream.request.body_text
        )
        if upstream is not None
        else _refusal(record)
    )
    if isinstance(rerun, BridgeError):
        current_request: Any = f"(not sent upstream: {rerun.type}: {rerun.message})"
        request_part = _compare(
            "upstream request", _lines(recorded_request), _lines(current_request)
        )
        reply_part = _reply_part(record, rerun.body(record.request_id))
        return DiffResult(record, request_part, reply_part)
    request_part = _compare(
        "upstream request", _lines(recorded_request), _lines(_elided(rerun.body))
    )
    if upstream is None:
        if record.reply is not None and record.status and record.status >= 400:
            # Refused here before: today it would go upstream, with no recorded answer.
            current = "(sent upstream now: no recorded answer to compare)"
            return DiffResult(record, request_part, _reply_part(record, current))
        return DiffResult(record, request_part, Part("reply", "skipped", note="no upstream call"))
    if record.state == "incomplete":
        return DiffResult(
            record, request_part, Part("reply", "skipped", note="the exchange is incomplete")
        )
    if upstream.response is None:
        note = f"the upstream was not reached ({upstream.error})"
        return DiffResult(record, request_part, Part("reply", "skipped", note=note))
    return DiffResult(record, request_part, _reply_part(record, rerun_reply(record, rerun)))


def _refusal(record: Record) -> str:
    error = record.error
    detail = f"{error.type}: {error.message}" if error else "no upstream call"
    return f"(not sent upstream: {detail})"


def _reply_part(record: Record, current: Any) -> Part:
    reply = record.reply
    if reply is None:
        return Part("reply", "skipped", note="no reply was recorded")
    recorded_lines = (
        _event_lines(e for _, e in reply.events) if reply.events is not None else _lines(reply.body)
    )
    current_lines = _event_lines(current) if isinstance(current, list) else _lines(current)
    return _compare("reply", recorded_lines, current_lines)


def diff_records(
    records: Sequence[Record], progress: Callable[[DiffResult], None] | None = None
) -> list[DiffResult]:
    results: list[DiffResult] = []
    for record in records:
        result = diff_record(record)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


# -- server replay -------------------------------------------------------------------------

# Claude Code puts a session id in `user` (translated) and `metadata.user_id` (passed through);
# the cache key and the Responses API's safety identifier are made from them.
_VOLATILE_FIELDS = ("user", "metadata", "prompt_cache_key", "safety_identifier")
_DROPPED_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}


def canonical_upstream(body: Any) -> Any:
    """The upstream request with what changes from run to run taken out: `user` and
    `metadata` (a session id) and what is made from them, base64 payloads (a journal may have
    elided them), and tool call ids (some are derived from random message ids), numbered in
    order of appearance instead (Chat Completions messages, Responses input items)."""
    if not isinstance(body, dict):
        return body
    data = {k: v for k, v in body.items() if k not in _VOLATILE_FIELDS}
    data = _elided(data)
    ids: dict[str, str] = {}

    def number(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return ids.setdefault(value, f"call#{len(ids)}")

    for message in data.get("messages") or ():
        if not isinstance(message, dict):
            continue
        if "tool_call_id" in message:
            message["tool_call_id"] = number(message["tool_call_id"])
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and "id" in call:
                call["id"] = number(call["id"])
    for item in data.get("input") or ():
        if isinstance(item, dict) and "call_id" in item:
            item["call_id"] = number(item["call_id"])
    return data


def request_key(body: bytes | Any) -> str:
    if isinstance(body, (bytes, bytearray)):
        try:
            body = json.loads(body)
        except ValueError:
            body = body.decode("utf-8", "replace")
    canonical = json.dumps(
        canonical_upstream(body), sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


MissPolicy = Literal["error", "forward"]


class ReplayTransport(httpx.AsyncBaseTransport):
    """Answers upstream calls from recorded exchanges.

    Each request is matched by `request_key`; equal requests get their recorded answers in
    order, and the last one again once they run out. A miss answers 404 with an OpenAI error
    body naming the key (`miss="error"`), or goes to `forward` (`miss="forward"`). With
    `timing`, the recorded delays before the answer and between chunks are kept.
    """

    def __init__(
        self,
        records: Iterable[Record],
        *,
        miss: MissPolicy = "error",
        forward: httpx.AsyncBaseTransport | None = None,
        timing: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if miss == "forward" and forward is None:
            raise ValueError("miss='forward' needs a transport to forward to")
        self.miss = miss
        self.forward = forward
        self.timing = timing
        self._sleep = sleep
        self._clock = clock
        self._answers: dict[str, deque[Upstream]] = {}
        self.hits = 0
        self.misses = 0
        self.models: set[str] = set()
        """The upstream models the recorded requests asked for."""
        records = list(records)
        self.searches = recorded_searches(records)
        """The web searches the proxy ran, by query: answered again from here too."""
        for record in sorted(records, key=lambda r: r.id):
            # Each upstream turn of an answer that took several (web searches between them).
            for upstream in [*record.turns, record.upstream]:
                if upstream is None or (upstream.response is None and upstream.error is None):
                    continue
                body = upstream.request.body
                text = upstream.request.body_text or ""
                key = request_key(body if body is not None else text)
                if isinstance(body, dict) and isinstance(body.get("model"), str):
                    self.models.add(body["model"])
                self._answers.setdefault(key, deque()).append(upstream)

    @property
    def size(self) -> int:
        return sum(len(q) for q in self._answers.values())

    def _take(self, key: str) -> Upstream | None:
        queue = self._answers.get(key)
        if not queue:
            return None
        return queue.popleft() if len(queue) > 1 else queue[0]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        arrived = self._clock()
        body = await request.aread()
        key = request_key(body)
        upstream = self._take(key)
        if upstream is None:
            self.misses += 1
            log.warning("upstream replay: no recorded answer for request %s", key[:12])
            if self.miss == "forward":
                assert self.forward is not None
                return await self.forward.handle_async_request(request)
            asked = _model_of(body)
            hint = ""
            if asked is not None and self.models and asked not in self.models:
                recorded = ", ".join(sorted(self.models))
                hint = (
                    f"; it asks for model {asked!r}, the recording for {recorded}: route models "
                    "as the recording did (BIG_MODEL, SMALL_MODEL, routes)"
                )
            miss = json.dumps(_miss_body(key, self.size, hint)).encode()
            return _whole(404, [("content-type", "application/json")], miss)
        self.hits += 1
        response = upstream.response
        if response is None:
            raise _transport_error(upstream.error or "ConnectError: recorded failure", request)
        start = upstream.sent_ms or 0.0
        if self.timing and upstream.response_ms is not None:
            await self._sleep(max(upstream.response_ms - start, 0.0) / 1000)
        headers = [(k, v) for k, v in response.headers.items() if k not in _DROPPED_HEADERS]
        if response.chunks is None:
            headers = [(k, v) for k, v in headers if k != "content-encoding"]
            return _whole(response.status, headers, body_bytes(response.body, response.body_text))
        stream = _ReplayStream(
            [(offset - start, chunk_data((offset, data))) for offset, data in response.chunks],
            error=None if upstream.complete else upstream.error,
            timing=self.timing,
            sleep=self._sleep,
            elapsed=lambda: (self._clock() - arrived) * 1000,
        )
        return httpx.Response(response.status, headers=headers, stream=stream)

    async def aclose(self) -> None:
        if self.forward is not None:
            await self.forward.aclose()


def _whole(status: int, headers: list[tuple[str, str]], content: bytes) -> httpx.Response:
    """A response as a transport returns it: unread, so a caller may stream it (`content=`
    would hand it over already read, and `aiter_raw` refuses a read response)."""
    headers = [*headers, ("content-length", str(len(content)))]
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(content))


def _model_of(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


def _miss_body(key: str, size: int, hint: str = "") -> dict[str, Any]:
    message = (
        f"claude-bridge upstream replay: no recorded answer matches this request "
        f"(key {key[:12]}; the recording holds {size} answers){hint}"
    )
    return {"error": {"message": message, "type": "replay_miss", "code": "replay_miss"}}


class _ReplayStream(httpx.AsyncByteStream):
    def __init__(
        self,
        chunks: list[tuple[float, bytes]],
        *,
        error: str | None,
        timing: bool,
        sleep: Callable[[float], Awaitable[None]],
        elapsed: Callable[[], float],
    ) -> None:
        self._chunks = chunks
        self._error = error
        self._timing = timing
        self._sleep = sleep
        self._elapsed = elapsed

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for offset, data in self._chunks:
            if self._timing:
                wait = offset - self._elapsed()
                if wait > 0:
                    await self._sleep(wait / 1000)
            yield data
        if self._error:
            raise _transport_error(self._error)


def _transport_error(recorded: str, request: httpx.Request | None = None) -> httpx.TransportError:
    """The httpx error the recording names ("ReadTimeout: ..."), so the proxy maps it as it
    did then; a `ReadError` when the name is not one of httpx's transport errors."""
    name, _, message = recorded.partition(": ")
    kind = getattr(httpx, name, None)
    if not (isinstance(kind, type) and issubclass(kind, httpx.TransportError)):
        kind, message = httpx.ReadError, recorded
    error: httpx.TransportError = kind(message, request=request)
    return error


# -- client replay -------------------------------------------------------------------------

_NOT_RESENT = {"host", "content-length", "connection", "transfer-encoding", "accept-encoding"}


@dataclass(frozen=True)
class SendResult:
    record: Record
    status: int | None
    request_id: str | None = None
    error: str | None = None
    """Why it failed: a transport error, or the error the answer carried."""
    duration_ms: float = 0.0

    @property
    def same_status(self) -> bool:
        return self.status == self.record.status


def resend_headers(record: Record, api_key: str | None) -> dict[str, str]:
    headers = {
        k: v
        for k, v in record.client.headers.items()
        if k not in _NOT_RESENT and k not in SECRET_HEADERS
    }
    headers[REPLAYED_FROM_HEADER] = record.id
    if api_key:
        headers["x-api-key"] = api_key
    return headers


async def send_record(
    client: httpx.AsyncClient,
    record: Record,
    api_key: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SendResult:
    content = body_bytes(record.client.body, record.client.body_text)
    headers = resend_headers(record, api_key)
    start = clock()
    try:
        async with client.stream(
            record.client.method,
            record.client.path or "/v1/messages",
            content=content,
            headers=headers,
        ) as response:
            raw = await response.aread()
    except httpx.HTTPError as exc:
        return SendResult(record, None, error=f"{type(exc).__name__}: {exc}")
    elapsed = (clock() - start) * 1000
    return SendResult(
        record,
        response.status_code,
        response.headers.get("request-id"),
        _answer_error(response.headers.get("content-type", ""), raw),
        round(elapsed, 1),
    )


def _answer_error(content_type: str, raw: bytes) -> str | None:
    if "text/event-stream" in content_type:
        decoder = SSEDecoder()
        for event in decoder.decode(raw) + decoder.flush():
            if event.event == "error":
                return _error_text(event.data)
        return None
    return _error_text(raw)


def _error_text(data: str | bytes) -> str | None:
    try:
        body = json.loads(data)
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("type") == "error":
        error = body.get("error") or {}
        return f"{error.get('type')}: {error.get('message')}"
    return None


async def send_records(
    client: httpx.AsyncClient,
    records: Sequence[Record],
    *,
    concurrency: int = 1,
    api_key: str | None = None,
    on_result: Callable[[SendResult], None] | None = None,
) -> list[SendResult]:
    """Re-send `records` oldest first, at most `concurrency` at a time; results in that order."""
    ordered = sorted(records, key=lambda r: r.id)
    limit = asyncio.Semaphore(max(concurrency, 1))

    async def one(record: Record) -> SendResult:
        async with limit:
            result = await send_record(client, record, api_key)
        if on_result is not None:
            on_result(result)
        return result

    return list(await asyncio.gather(*(one(r) for r in ordered)))


def resendable(record: Record) -> bool:
    return record.client.body is not None or record.client.body_text is not None
