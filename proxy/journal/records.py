"""The journal's record: one line of JSON per exchange, versioned, redacted and elided.

A record holds everything needed to look at an exchange later, re-run it through the current
translation (`replay diff`), re-send it (`replay send`) or answer its upstream call again
(`serve --upstream-replay`)::

    v                   FORMAT_VERSION of the writer
    id                  time-sortable (ULID: 48-bit milliseconds, 80 random bits, Crockford)
    request_id          the `request-id` the client saw
    state               "complete", or "incomplete" (in flight at shutdown, or a cut stream)
    replayed_from       the record id a `replay send` re-sent, if any
    session_id          the client's conversation (Claude Code's session id), if it sent one
    agent_id            the subagent of that conversation that asked, if one did
    timings             wall-clock start; first upstream byte, first client byte, end (ms)
    client              method, path, headers (redacted), body
    routing             client model -> upstream model, what chose it, the dialect, the
                        translation options, message id
    upstream            request (url, headers, body); response (status, headers, body or the
                        raw chunks with millisecond offsets); transport error; earlier tries
    reply               what the client got: status and body, or the SSE events with offsets
    usage               token counts and the upstream's reported cost: a cost is derived on
                        read (`pricing`), so a corrected price re-prices old records
    status, error, notes

Bodies are parsed JSON in `body`, or text in `body_text` when they are not JSON. A raw chunk
is `[ms, "text"]`, or `[ms, {"base64": "..."}]` when it is not valid UTF-8 on its own (a chunk
may end inside a multibyte character). Secrets are removed when a record is written, never
later: `redact_headers` for header values, `scrub` for configured secret strings anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 1
"""Bump on any change an older reader would misread (a renamed, moved or re-typed field) and
add the step to `upgrade`; a new optional field with a default keeps the version (readers
ignore fields they do not know). tests/data/journal/v1-frozen.jsonl must always load."""

REDACTED = "[redacted]"
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)
ELIDE_OVER = 2048
"""Base64 payloads longer than this many characters are elided unless recording in full."""
ELIDED_PREFIX = "[elided base64:"
REPLAYED_FROM_HEADER = "x-claude-bridge-replayed-from"
"""Sent by `replay send`; the receiving bridge records it as `replayed_from`."""


class _Model(BaseModel):
    # Unknown fields of a newer minor writer are ignored, not fatal.
    model_config = ConfigDict(extra="ignore")


class Timings(_Model):
    started_at: float
    """Wall-clock start, seconds since the epoch."""
    upstream_first_byte_ms: float | None = None
    client_first_byte_ms: float | None = None
    end_ms: float | None = None


class ClientRequest(_Model):
    method: str = "POST"
    path: str = "/v1/messages"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    body_text: str | None = None


class Routing(_Model):
    client_model: str = ""
    upstream: str | None = None
    """The name of the upstream (recordings before several upstreams: none)."""
    mode: str = "openai"
    """The dialect the upstream was spoken to in (`core.dialects`): `openai` (Chat
    Completions), `responses`, or `anthropic` (passed through, not translated)."""
    upstream_model: str = ""
    stream: bool = False
    options: dict[str, Any] | None = None
    """The `RequestOptions` the request was translated with."""
    routed_by: str | None = None
    """What chose the upstream and model: a rule, a tier, a gateway id."""
    message_id: str | None = None


Chunk = tuple[float, str | dict[str, str]]
TimedEvent = tuple[float, dict[str, Any]]


class UpstreamRequest(_Model):
    method: str = "POST"
    url: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    body_text: str | None = None


class UpstreamResponse(_Model):
    status: int
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    body_text: str | None = None
    chunks: list[Chunk] | None = None
    """An event stream, as the raw chunks read, each with its offset from the start in ms."""


class Upstream(_Model):
    request: UpstreamRequest
    response: UpstreamResponse | None = None
    error: str | None = None
    """A transport failure: no answer at all, or the body cut short."""
    complete: bool = False
    """The answer was read to its end."""
    sent_ms: float | None = None
    response_ms: float | None = None
    """When the request went out and the status and headers came back."""
    retries: list[str] = Field(default_factory=list)
    """Earlier tries of the same request (the upstream client retries 502, 503 and refused
    connections): when each went out and what it got. The rest of this record is the last."""


class Reply(_Model):
    status: int
    body: Any = None
    events: list[TimedEvent] | None = None


class Usage(_Model):
    """The counts, never a cost: prices are applied when a record is read (`pricing`)."""

    input_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    """Part of `output_tokens`."""
    upstream_cost: float | None = None
    """What the upstream said the exchange cost (OpenRouter's `usage.cost`), in USD."""
    stop_reason: str | None = None


class ErrorInfo(_Model):
    type: str
    message: str


class AttemptRecord(_Model):
    """One target (and key) tried for a fallback chain or a key pool (`resilience.failover`)."""

    upstream: str
    model: str
    key: str
    """The key's name (its variable, or `key N`), never its value."""
    outcome: str
    """`ok`, `failed`, or `skipped` (breaker open, every key resting)."""
    offset_ms: float = 0.0
    ms: float = 0.0
    status: int | None = None
    error_type: str | None = None
    error: str | None = None


class Record(_Model):
    v: int = FORMAT_VERSION
    id: str
    request_id: str = ""
    state: Literal["complete", "incomplete"] = "complete"
    replayed_from: str | None = None
    session_id: str | None = None
    """The client's conversation (Claude Code's session id)."""
    agent_id: str | None = None
    """The subagent of that conversation that asked (Claude Code's agent id), if one did."""
    timings: Timings
    client: ClientRequest = Field(default_factory=ClientRequest)
    routing: Routing = Field(default_factory=Routing)
    upstream: Upstream | None = None
    reply: Reply | None = None
    usage: Usage = Field(default_factory=Usage)
    status: int | None = None
    error: ErrorInfo | None = None
    notes: list[str] = Field(default_factory=list)
    attempts: list[AttemptRecord] = Field(default_factory=list)
    """Every attempt when more than one was made (or the only one failed); else empty."""
    turns: list[Upstream] = Field(default_factory=list)
    """The upstream turns before `upstream` of an answer that took several (the proxy ran
    the model's web searches between them), oldest first."""
    elided: int = 0
    """How many base64 payloads were left out (0 with `--record-full`)."""

    def line(self) -> str:
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))


class FormatError(ValueError):
    """A record this version cannot read."""


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A record of any known version, in the current version's shape."""
    version = data.get("v")
    if not isinstance(version, int):
        raise FormatError("not a claude-bridge journal record (no format version)")
    if version > FORMAT_VERSION:
        raise FormatError(
            f"record format v{version} is newer than this claude-bridge reads (v{FORMAT_VERSION})"
        )
    # v1 is the first format: later versions add their steps here, oldest first.
    return data


def parse_record(data: dict[str, Any]) -> Record:
    return Record.model_validate(upgrade(data))


# -- ids -----------------------------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def record_id(now: float, entropy: bytes | None = None, after: str | None = None) -> str:
    """A ULID: sorts by time as text, unique without coordination. Given the `after` id, the
    new one sorts after it even within the same millisecond (the ULID spec's monotonic mode)."""
    randomness = entropy if entropy is not None else secrets.token_bytes(10)
    value = (int(now * 1000) << 80) | int.from_bytes(randomness[:10].rjust(10, b"\0"), "big")
    if after is not None:
        value = max(value, _ulid_value(after) + 1)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _ulid_value(id_: str) -> int:
    value = 0
    for char in id_.upper():
        value = value * 32 + _CROCKFORD.index(char)
    return value


def record_time(id_: str) -> float:
    """The seconds since the epoch a `record_id` was made at."""
    return _ulid_value(id_[:10]) / 1000


# -- bodies and chunks ---------------------------------------------------------------------


def body_fields(raw: bytes) -> tuple[Any, str | None]:
    """(body, body_text): parsed JSON, or the text when it is not JSON; (None, None) if empty."""
    if not raw:
        return None, None
    try:
        return json.loads(raw), None
    except ValueError:
        return None, raw.decode("utf-8", "replace")


def body_bytes(body: Any, body_text: str | None) -> bytes:
    if body_text is not None:
        return body_text.encode()
    if body is None:
        return b""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def encode_chunk(offset_ms: float, data: bytes) -> Chunk:
    try:
        return offset_ms, data.decode("utf-8")
    except UnicodeDecodeError:
        return offset_ms, {"base64": base64.b64encode(data).decode()}


def chunk_data(chunk: Chunk) -> bytes:
    payload = chunk[1]
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return base64.b64decode(payload["base64"])


# -- redaction -----------------------------------------------------------------------------


def redact_headers(headers: Iterable[tuple[str, str]], names: Iterable[str] = ()) -> dict[str, str]:
    """Headers as a dict (names lower-cased, repeats joined), secret values replaced."""
    hidden = SECRET_HEADERS | {name.lower() for name in names}
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        value = REDACTED if key in hidden else value
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def scrub(line: str, secrets: Sequence[str]) -> str:
    """Every configured secret replaced, however it appears in the JSON line (raw or escaped)."""
    for form in _forms(secrets):
        line = line.replace(form, REDACTED)
    return line


def scrub_chunks(
    chunks: Sequence[tuple[float, bytes]], secrets: Sequence[str]
) -> list[tuple[float, bytes]]:
    """Raw chunks without the secrets, searched in their joined bytes: a key split between
    two reads is found too (and one in a chunk that is not UTF-8 on its own, which the record
    keeps as base64, out of `scrub`'s sight). Each secret becomes REDACTED in the chunk where
    it starts and is dropped from the chunks it runs on into; chunks and offsets stay."""
    forms = _forms(secrets)
    if not forms or not chunks:
        return list(chunks)
    joined = b"".join(data for _, data in chunks)
    pattern = re.compile(b"|".join(re.escape(form.encode()) for form in forms))
    spans = [match.span() for match in pattern.finditer(joined)]
    if not spans:
        return list(chunks)
    scrubbed: list[tuple[float, bytes]] = []
    start = 0
    for offset, data in chunks:
        end = start + len(data)
        kept, position = [], start
        for first, last in spans:
            if last <= start or first >= end:
                continue
            kept.append(joined[position:first] if first > position else b"")
            if first >= start:
                kept.append(REDACTED.encode())
            position = min(last, end)
        kept.append(joined[position:end])
        scrubbed.append((offset, b"".join(kept)))
        start = end
    return scrubbed


def _forms(secrets: Sequence[str]) -> list[str]:
    """The secrets as they can appear in JSON text, raw and escaped, longest first (a secret
    that contains another is removed whole)."""
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) < 4:
            continue  # too short to be a key, and replacing it would shred the record
        forms.add(secret)
        forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    return sorted(forms, key=len, reverse=True)


# -- base64 elision ------------------------------------------------------------------------

_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_DATA_URL = re.compile(r"data:[^,;]*(?:;[^,;]*)*;base64,")


def elided(payload: str) -> str:
    """The stand-in for a payload: its size and hash, so identical payloads elide alike."""
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return f"{ELIDED_PREFIX} {len(payload)} chars, sha256 {digest}]"


def _elide_string(value: str, limit: int) -> str | None:
    if len(value) <= limit:
        return None
    match = _DATA_URL.match(value)
    if match:
        payload = value[match.end() :]
        if len(payload) > limit and _BASE64.fullmatch(payload):
            return match.group() + elided(payload)
        return None
    if _BASE64.fullmatch(value):
        return elided(value)
    return None


def elide_base64(value: Any, limit: int = ELIDE_OVER) -> tuple[Any, int]:
    """`value` with long base64 strings (and base64 `data:` URLs) replaced by `elided(...)`;
    the number replaced. Pure: `value` is not changed."""
    count = 0

    def walk(item: Any) -> Any:
        nonlocal count
        if isinstance(item, str):
            replacement = _elide_string(item, limit)
            if replacement is None:
                return item
            count += 1
            return replacement
        if isinstance(item, dict):
            return {key: walk(child) for key, child in item.items()}
        if isinstance(item, list):
            return [walk(child) for child in item]
        return item

    return walk(value), count
