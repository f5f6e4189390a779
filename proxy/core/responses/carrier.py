"""A Responses reasoning item carried in a thinking block's signature (PROTOCOL.md 10.11).

With `store: false` the upstream keeps nothing between requests; Anthropic clients send each
thinking block back verbatim (Claude Code's context edits keep `type`, `thinking` and
`signature`). So the reasoning item's id and its `encrypted_content` ride in the signature (or
the `data` of a `redacted_thinking` block) and become the reasoning item again on the next
request, with no state in the proxy.

Format: `cb1.rs.<scope>.<kind>.<id>.<encrypted_content>`: `cb1.` marks every signature this
proxy makes (a request on to real Anthropic drops them); `scope` is a short hash of the upstream
that minted the blob, so it is never sent to another (a foreign signature decodes to nothing and
the block is left out); `kind` says whether the thinking text was a summary (`s`) or the clear
reasoning open-weight servers stream (`t`); `id` is base64url. The blob goes last, as it is:
whatever characters it has, nothing after it needs splitting.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Literal

from ..ids import PROXY_SIGNATURE_PREFIX

PREFIX = PROXY_SIGNATURE_PREFIX + "rs."
Kind = Literal["s", "t"]


@dataclass(frozen=True)
class Reasoning:
    id: str
    encrypted_content: str
    kind: Kind = "s"


def scope_tag(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:8]


def pack(scope: str, item_id: str, encrypted_content: str, kind: Kind = "s") -> str:
    encoded = base64.urlsafe_b64encode(item_id.encode()).decode().rstrip("=")
    return f"{PREFIX}{scope_tag(scope)}.{kind}.{encoded}.{encrypted_content}"


def unpack(signature: str, scope: str) -> Reasoning | None:
    """The reasoning item a signature carries for `scope`; None for any other signature."""
    if not signature.startswith(PREFIX):
        return None
    parts = signature[len(PREFIX) :].split(".", 3)
    if len(parts) != 4 or parts[0] != scope_tag(scope) or parts[1] not in ("s", "t"):
        return None
    _, kind, encoded, blob = parts
    try:
        item_id = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    if not item_id or not blob:
        return None
    return Reasoning(item_id, blob, "t" if kind == "t" else "s")
