"""Which conversation a request belongs to (PROTOCOL.md 11.2, 11.3).

Claude Code sends its session id twice: as the `x-claude-code-session-id` header and inside
`metadata.user_id`, a JSON string `{"device_id": ..., "account_uuid": ..., "session_id": ...}`
(older versions: `user_<hash>_account_<uuid>_session_<uuid>`). The header wins; the body covers
clients that forward only the body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

SESSION_HEADER = "x-claude-code-session-id"
AGENT_HEADER = "x-claude-code-agent-id"
"""Sent on subagent requests only (PROTOCOL.md 11.2): which agent of the session asks."""
MAX_LENGTH = 128
"""Longer values are not a session id: they are cut, so a client cannot bloat every record."""
_LEGACY = re.compile(r"_session_([0-9A-Za-z-]{8,64})$")


def session_id(headers: Mapping[str, str], body: Any) -> str | None:
    """The session id from the request's headers (see `header`) or its body."""
    found = _id_header(headers, SESSION_HEADER)
    if found is not None:
        return found
    metadata = body.get("metadata") if isinstance(body, dict) else None
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    return session_of_user_id(user_id) if isinstance(user_id, str) else None


def agent_id(headers: Mapping[str, str]) -> str | None:
    """The subagent a request comes from (None: the main conversation, or not Claude Code)."""
    return _id_header(headers, AGENT_HEADER)


def _id_header(headers: Mapping[str, str], wanted: str) -> str | None:
    value = header(headers, wanted).strip()
    return value[:MAX_LENGTH] if value else None


def header(headers: Mapping[str, str], wanted: str) -> str:
    """The value of header `wanted` (a lowercase name), "" if absent. A dict's names may be in
    any case; any other mapping must find names in any case itself, as starlette's `Headers`
    does without decoding every header as its `items()` would."""
    if isinstance(headers, dict):
        return next((v for name, v in headers.items() if name.lower() == wanted), "")
    return headers.get(wanted, "")


def session_of_user_id(user_id: str) -> str | None:
    """The session id inside `metadata.user_id` (PROTOCOL.md 11.3), if it holds one."""
    if user_id.startswith("{"):
        try:
            data = json.loads(user_id)
        except ValueError:
            return None
        found = data.get("session_id") if isinstance(data, dict) else None
        return found[:MAX_LENGTH] if isinstance(found, str) and found else None
    legacy = _LEGACY.search(user_id)
    return legacy.group(1) if legacy else None
