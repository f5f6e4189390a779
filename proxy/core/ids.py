"""Identifiers: tool-call ids both ways, tool names both ways, message ids.

Everything here is recomputable from the request, so the proxy keeps no state between calls.

Tool-call ids the client gets back are the upstream's own when Anthropic accepts them; else
`toolu_cb_` + base64url(upstream id). A call that came with a thought signature the upstream
wants back (Gemini's `extra_content.google.thought_signature`, OpenRouter's `reasoning.encrypted`
detail keyed by the call id) gets `toolu_cbs_` + base64url(binary record of the upstream id and
the signature), so the signature travels in the id Claude Code stores and sends back
(`tool_use.id`, `tool_result.tool_use_id`) and is restored on the next request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import string
import struct
from dataclasses import dataclass
from typing import Any

VALID_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")
VALID_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# Upstream ids Anthropic would reject ("functions.add:0") travel base64url-encoded after this.
ENCODED_ID_PREFIX = "toolu_cb_"
CARRIER_ID_PREFIX = "toolu_cbs_"
# Upstream ids that start like ours are always encoded, so decoding never mistakes them.
_RESERVED_PREFIX = "toolu_cb"
_BASE62 = string.ascii_letters + string.digits


def _base62(data: bytes, length: int) -> str:
    """`length` base62 digits of `data` (which must hold enough bits for them)."""
    number = int.from_bytes(data, "big")
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(digits)


# A random byte b becomes the digit b % 62: the first 8 digits come up 5 times in 256, the
# others 4, so 22 digits hold 130.9 random bits (base62 of one 136-bit number: 131) for a fifth
# of the cost of that number's 22 divisions, paid on every request.
_DIGIT_OF_BYTE = bytes(ord(_BASE62[byte % 62]) for byte in range(256))


def _random_base62(length: int = 22) -> str:
    return secrets.token_bytes(length).translate(_DIGIT_OF_BYTE).decode("ascii")


def new_message_id() -> str:
    return "msg_01" + _random_base62()


def new_request_id() -> str:
    return "req_01" + _random_base62()


@dataclass(frozen=True)
class Carried:
    """What an upstream attached to a tool call and wants back with it on the next request."""

    extra_content: dict[str, Any] | None = None
    """Gemini: the call's `extra_content` (`{"google": {"thought_signature": ...}}`)."""
    reasoning_detail: dict[str, Any] | None = None
    """OpenRouter: the `reasoning.encrypted` detail whose `id` is the call's id."""

    def __bool__(self) -> bool:
        return bool(self.extra_content or self.reasoning_detail)


def tool_id_to_client(
    upstream_id: str | None, fallback_seed: str, carried: Carried | None = None
) -> str:
    """An id the Anthropic client accepts and `tool_id_to_upstream` turns back into the
    original; with `carried`, one `decode_tool_id` also gives that back from."""
    if not upstream_id:
        digest = hashlib.sha256(fallback_seed.encode()).hexdigest()[:24]
        upstream_id = f"toolu_{digest}"
        if not carried:
            return upstream_id
    if carried:
        return CARRIER_ID_PREFIX + _b64(_pack(upstream_id, carried))
    if VALID_TOOL_ID.match(upstream_id) and not upstream_id.startswith(_RESERVED_PREFIX):
        return upstream_id
    return ENCODED_ID_PREFIX + _b64(upstream_id.encode())


def tool_id_to_upstream(client_id: str) -> str:
    return decode_tool_id(client_id)[0]


def decode_tool_id(client_id: str) -> tuple[str, Carried | None]:
    """(the upstream's id, what it wants back with it). Ids we did not make pass unchanged."""
    if client_id.startswith(CARRIER_ID_PREFIX):
        try:
            return _unpack(_unb64(client_id[len(CARRIER_ID_PREFIX) :]))
        except (ValueError, UnicodeDecodeError, struct.error):
            return client_id, None
    if client_id.startswith(ENCODED_ID_PREFIX):
        try:
            return _unb64(client_id[len(ENCODED_ID_PREFIX) :]).decode(), None
        except (ValueError, UnicodeDecodeError):
            return client_id, None
    return client_id, None


def fit_tool_id(
    upstream_id: str, *, max_length: int | None = None, alnum_length: int | None = None
) -> str:
    """An id within a server's rules (OpenAI: at most 40 characters; Mistral: exactly 9
    alphanumerics). Ids within them pass; others (from history another upstream made) become
    a hash of themselves: the same on every request, so calls and results still pair up."""
    if alnum_length:
        if len(upstream_id) == alnum_length and upstream_id.isascii() and upstream_id.isalnum():
            return upstream_id
        return _base62(hashlib.sha256(upstream_id.encode()).digest(), alnum_length)
    if max_length and len(upstream_id) > max_length:
        size = max(1, min(32, max_length - 5))
        return "call_" + hashlib.sha256(upstream_id.encode()).hexdigest()[:size]
    return upstream_id


# -- the carrier record ---------------------------------------------------------------------
# version 1, u16 id length, id; then items: u8 kind, u32 length, bytes. Base64 signatures are
# stored decoded (a third shorter) when they re-encode to the same text.

_VERSION = 1
_SIGNATURE_BYTES = 1  # extra_content {"google": {"thought_signature": <base64>}}
_SIGNATURE_TEXT = 2  # the same, a signature that is not canonical base64
_EXTRA_JSON = 3  # any other extra_content
_DETAIL_BYTES = 4  # {"type": "reasoning.encrypted", "data": <base64>, "format", "id", "index"}
_DETAIL_JSON = 5  # any other detail, without its id
_DETAIL_KEYS = frozenset(("type", "data", "format", "id", "index"))


def _pack(upstream_id: str, carried: Carried) -> bytes:
    raw_id = upstream_id.encode()
    out = [struct.pack(">BH", _VERSION, len(raw_id)), raw_id]
    if carried.extra_content:
        out.append(_extra_item(carried.extra_content))
    if carried.reasoning_detail:
        out.append(_detail_item(carried.reasoning_detail))
    return b"".join(out)


def _item(kind: int, data: bytes) -> bytes:
    return struct.pack(">BI", kind, len(data)) + data


def _extra_item(extra: dict[str, Any]) -> bytes:
    google = extra.get("google")
    if (
        list(extra) == ["google"]
        and isinstance(google, dict)
        and list(google) == ["thought_signature"]
    ):
        signature = google["thought_signature"]
        if isinstance(signature, str):
            decoded = _canonical_b64(signature)
            if decoded is not None:
                return _item(_SIGNATURE_BYTES, decoded)
            return _item(_SIGNATURE_TEXT, signature.encode())
    return _item(_EXTRA_JSON, _json(extra))


def _detail_item(detail: dict[str, Any]) -> bytes:
    data, form, index = detail.get("data"), detail.get("format"), detail.get("index")
    if (
        set(detail) == _DETAIL_KEYS
        and detail["type"] == "reasoning.encrypted"
        and isinstance(data, str)
        and isinstance(form, str)
        and len(form.encode()) < 256
        and isinstance(index, int)
        and not isinstance(index, bool)
        and 0 <= index < 65536
    ):
        decoded = _canonical_b64(data)
        if decoded is not None:
            raw_form = form.encode()
            return _item(
                _DETAIL_BYTES,
                struct.pack(">B", len(raw_form)) + raw_form + struct.pack(">H", index) + decoded,
            )
    return _item(_DETAIL_JSON, _json({k: v for k, v in detail.items() if k != "id"}))


def _unpack(payload: bytes) -> tuple[str, Carried]:
    version, size = struct.unpack_from(">BH", payload)
    if version != _VERSION:
        raise ValueError(f"carrier version {version}")
    at = 3
    upstream_id = payload[at : at + size].decode()
    at += size
    extra: dict[str, Any] | None = None
    detail: dict[str, Any] | None = None
    while at < len(payload):
        kind, size = struct.unpack_from(">BI", payload, at)
        at += 5
        data = payload[at : at + size]
        if len(data) != size:
            raise ValueError("carrier cut short")
        at += size
        if kind == _SIGNATURE_BYTES:
            extra = {"google": {"thought_signature": base64.b64encode(data).decode()}}
        elif kind == _SIGNATURE_TEXT:
            extra = {"google": {"thought_signature": data.decode()}}
        elif kind == _EXTRA_JSON:
            extra = _object(data)
        elif kind == _DETAIL_BYTES:
            form_size = data[0]
            form = data[1 : 1 + form_size].decode()
            (index,) = struct.unpack_from(">H", data, 1 + form_size)
            detail = {
                "type": "reasoning.encrypted",
                "data": base64.b64encode(data[3 + form_size :]).decode(),
                "format": form,
                "id": upstream_id,
                "index": index,
            }
        elif kind == _DETAIL_JSON:
            detail = {**_object(data), "id": upstream_id}
        else:
            raise ValueError(f"carrier item kind {kind}")
    return upstream_id, Carried(extra_content=extra, reasoning_detail=detail)


def _canonical_b64(text: str) -> bytes | None:
    try:
        decoded = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error is one
        return None
    return decoded if base64.b64encode(decoded).decode() == text else None


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _object(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("carrier item is not an object")
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def short_tool_name(name: str) -> str:
    """Names OpenAI would reject (over 64 characters, other characters) made valid, stably."""
    if VALID_TOOL_NAME.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    cleaned = re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:55]
    return f"{cleaned}_{digest}"


class ToolNames:
    """The reversible client name <-> upstream name map of one request."""

    def __init__(self, client_names: list[str] | tuple[str, ...] = ()) -> None:
        self._up: dict[str, str] = {}
        self._down: dict[str, str] = {}
        for name in client_names:
            self.to_upstream(name)

    def to_upstream(self, client_name: str) -> str:
        upstream = self._up.get(client_name)
        if upstream is None:
            upstream = short_tool_name(client_name)
            self._up[client_name] = upstream
            self._down[upstream] = client_name
        return upstream

    def to_client(self, upstream_name: str) -> str:
        # A name the model invented passes through: the client reports "no such tool" itself.
        return self._down.get(upstream_name, upstream_name)


def proxy_signature(thinking: str) -> str:
    """The signature of a thinking block an OpenAI-compatible upstream produced.

    Clients need a non-empty string to replay the block; the prefix marks it as ours, so a
    request that goes on to a real Anthropic upstream can drop what Anthropic would reject.
    """
    return PROXY_SIGNATURE_PREFIX + hashlib.sha256(thinking.encode()).hexdigest()[:32]


PROXY_SIGNATURE_PREFIX = "cb1."
