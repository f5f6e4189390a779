"""The scripted upstream of `doctor --claude`: OpenAI Chat Completions answers picked by a marker
in the conversation, served inside this process through an httpx transport.

No model, no key, no network. Each case of the grid (`grid.py`) puts `[doctor:CASE]` (or
`[doctor:CASE ARGUMENT]`) in its prompt; `script` reads the request the proxy translated and
answers as an OpenAI-compatible server would: text, reasoning, tool calls, an error, a stream cut
halfway. What comes back is checked against what reached the upstream, so the answer text itself
says whether a tool result, an image or a subagent's words made the round trip.

The proxy reaches it through its one upstream seam (`create_app(transport=...)`): requests take
the whole translated path, streams are relayed chunk by chunk, and a cut is the same
`httpx.RemoteProtocolError` a server hanging up mid-body gives.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from .searxng import RESULT_URL

MODEL = "doctor-scripted"
MARKER = re.compile(r"\[doctor:([a-z_-]+)(?: ([^\]]*))?\]")

TEXT = "doctor: plain text ok"
STREAMED = "Streamed in pieces: ünïcødé ✓ 日本語 🙂\nsecond line — the end."
BASH_MARKER = "doctor-bash-ok"
PARALLEL_MARKERS = ("doctor-one", "doctor-two")
THOUGHT = "The user wants the thinking check, so I think first and then run the marker."
THINK_MARKER = "doctor-thought-ok"
SUBAGENT_MARKER = "doctor-subagent-ok"
SUBAGENT_WORDS = f"The marker is {SUBAGENT_MARKER}."
IMAGE_SEEN = "Image received"
CUT_TEXT = "This answer was cut off once and then sent again whole."
UPSTREAM_ERROR = "doctor: the scripted upstream refused this request"
NO_WEB_SEARCH = "doctor: Claude Code offered no WebSearch tool"
NO_STREAMING = "doctor: streaming is not served for this case"
SUBAGENT_INNER = "subagent-inner"
WEB_SEARCH_INNER = "web-search-inner"
SEARCH_QUERY = "claude-bridge doctor search"
SEARCH_FOUND = "Search found"
SEARCH_SUMMARY = "The doctor's search found its one page."


@dataclass(frozen=True)
class Reply:
    """One scripted answer: OpenAI `delta`s, then a finish reason; or an error status; or, with
    `cut`, the deltas and then a connection that breaks."""

    deltas: tuple[dict[str, Any], ...] = ()
    finish: str = "stop"
    cut: bool = False
    error: str | None = None
    status: int = 400
    """The error's HTTP status."""


@dataclass(frozen=True)
class Seen:
    """One chat completion request as it reached the upstream."""

    case: str | None
    body: dict[str, Any]


def text(content: str, pieces: int = 1) -> Reply:
    size = max(1, -(-len(content) // pieces))
    chunks = [content[i : i + size] for i in range(0, len(content), size)]
    return Reply(tuple({"content": chunk} for chunk in chunks))


def tool_calls(*calls: tuple[str, str, dict[str, Any]], before: str = "") -> Reply:
    """Tool calls as a server streams them: id, type and name in the first fragment, the
    arguments in two halves, the calls' fragments interleaved."""
    deltas: list[dict[str, Any]] = [{"reasoning_content": before}] if before else []
    fragments: list[list[dict[str, Any]]] = []
    for index, (call_id, name, arguments) in enumerate(calls):
        encoded = json.dumps(arguments)
        middle = len(encoded) // 2
        function = {"name": name, "arguments": ""}
        head = {"index": index, "id": call_id, "type": "function", "function": function}
        halves = (encoded[:middle], encoded[middle:])
        fragments.append([head, *({"index": index, "function": {"arguments": h}} for h in halves)])
    for step in itertools.zip_longest(*fragments):
        deltas += [{"tool_calls": [fragment]} for fragment in step if fragment is not None]
    return Reply(tuple(deltas), finish="tool_calls")


def marker(body: dict[str, Any]) -> tuple[str, str] | None:
    """The case and argument of the first user message that carries a marker."""
    for message in body.get("messages", []):
        if message.get("role") == "user":
            found = MARKER.search(_text(message.get("content")))
            if found:
                return found.group(1), found.group(2) or ""
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _results(body: dict[str, Any]) -> dict[str, str]:
    """The tool results the request carries, by the id of the call they answer."""
    return {
        str(m.get("tool_call_id")): _text(m.get("content"))
        for m in body.get("messages", [])
        if m.get("role") == "tool"
    }


def _tool_names(body: dict[str, Any]) -> set[str]:
    return {t.get("function", {}).get("name") for t in body.get("tools", []) or []}


def _images(body: dict[str, Any]) -> list[str]:
    """The media types of the images the request carries (`data:` URLs)."""
    found = []
    for message in body.get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            url = part.get("image_url", {}).get("url", "") if isinstance(part, dict) else ""
            if url.startswith("data:image/"):
                found.append(url[5:].split(";", 1)[0])
    return found


def _answer_results(results: dict[str, str], wanted: dict[str, str], prefix: str) -> Reply:
    """The closing text of a tool round trip: the results, in call order, if each call got
    one that holds what the call printed; else what went wrong, for the check to report."""
    missing = [cid for cid, mark in wanted.items() if mark not in results.get(cid, "")]
    if missing:
        return text(f"Tool results did not come back for {missing}: got {results}")
    return text(prefix + " | ".join(results[cid].strip() for cid in wanted))


def _bash(call_id: str, word: str) -> tuple[str, str, dict[str, Any]]:
    return call_id, "Bash", {"command": f"echo {word}", "description": "Print a doctor marker"}


def script(body: dict[str, Any], attempt: int) -> Reply:
    """The answer to `body`, the `attempt`-th request (from 1) of its case."""
    found = marker(body)
    case, argument = found if found else ("", "")
    results = _results(body)
    if case == "text":
        # Streaming refused as a server without it would: Claude Code asks again without.
        if body.get("stream"):
            return Reply(error=NO_STREAMING, status=404)
        return text(TEXT)
    if case == "stream":
        return text(STREAMED, pieces=24)
    if case == "bash":
        if results:
            return _answer_results(results, {"call_doctor_bash": BASH_MARKER}, "Bash said: ")
        return tool_calls(_bash("call_doctor_bash", BASH_MARKER))
    if case == "parallel":
        wanted = dict(zip(("call_doctor_one", "call_doctor_two"), PARALLEL_MARKERS, strict=True))
        if results:
            return _answer_results(results, wanted, "Both ran: ")
        return tool_calls(*(_bash(cid, word) for cid, word in wanted.items()))
    if case == "thinking":
        if results:
            return _answer_results(results, {"call_doctor_think": THINK_MARKER}, "Thought: ")
        return tool_calls(_bash("call_doctor_think", THINK_MARKER), before=THOUGHT)
    if case == "image":
        if results:
            seen = _images(body)
            return text(f"{IMAGE_SEEN}: {seen[0]}" if seen else "No image reached the upstream")
        return tool_calls(("call_doctor_read", "Read", {"file_path": argument}))
    if case == "cut":
        return Reply(text(CUT_TEXT).deltas[:1], cut=True) if attempt == 1 else text(CUT_TEXT, 4)
    if case == "error":
        return Reply(error=UPSTREAM_ERROR)
    if case == "subagent":
        # The subagent's answer comes back as the tool result (older releases) or, from a
        # subagent run in the background, in a later notification.
        if any(SUBAGENT_WORDS in _text(m.get("content")) for m in body.get("messages", [])[1:]):
            return text(f"Subagent said: {SUBAGENT_WORDS}")
        if results:
            return text("Waiting for the subagent.")
        agent = "Agent" if "Agent" in _tool_names(body) else "Task"
        task = {
            "description": "Doctor subagent",
            "prompt": f"[doctor:{SUBAGENT_INNER}] Answer with the marker.",
            "subagent_type": "general-purpose",
        }
        return tool_calls(("call_doctor_agent", agent, task))
    if case == SUBAGENT_INNER:
        return text(SUBAGENT_WORDS)
    if case == "web_search":
        return _web_search(body, results)
    if case == WEB_SEARCH_INNER:
        # Claude Code's own request for the search, with Anthropic's server tool, which the
        # proxy offers as a `web_search` function and answers by searching.
        if "web_search" not in _tool_names(body):
            return text("claude-bridge offered no web_search function")
        if results:
            return text(SEARCH_SUMMARY)
        return tool_calls(("call_doctor_web_search", "web_search", {"query": SEARCH_QUERY}))
    return text("ok")  # a side call (a title, a summary): nothing to check


def _web_search(body: dict[str, Any], results: dict[str, str]) -> Reply:
    """Claude Code's WebSearch tool called with a query carrying the inner case's marker (after
    loading it with ToolSearch where it is deferred); then whether its result holds the URL
    the search backend answers with."""
    if "call_doctor_search" in results:
        result = results["call_doctor_search"]
        if RESULT_URL in result:
            return text(f"{SEARCH_FOUND}: {RESULT_URL}")
        return text(f"The WebSearch result lacks {RESULT_URL}: {result[:300]}")
    tools = _tool_names(body)
    if "WebSearch" in tools:
        query = f"[doctor:{WEB_SEARCH_INNER}] {SEARCH_QUERY}"
        return tool_calls(("call_doctor_search", "WebSearch", {"query": query}))
    if "ToolSearch" in tools and "call_doctor_load" not in results:
        load = {"query": "select:WebSearch", "max_results": 1}
        return tool_calls(("call_doctor_load", "ToolSearch", load))
    return text(NO_WEB_SEARCH)


def completion(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    """`reply` as one non-streaming chat completion."""
    message: dict[str, Any] = {"role": "assistant", "content": None}
    calls: dict[int, dict[str, Any]] = {}
    for delta in reply.deltas:
        for key in ("content", "reasoning_content"):
            if key in delta:
                message[key] = (message.get(key) or "") + delta[key]
        for fragment in delta.get("tool_calls", []):
            call = calls.setdefault(fragment["index"], {"function": {"arguments": ""}})
            call.update({k: v for k, v in fragment.items() if k not in ("index", "function")})
            function = fragment.get("function", {})
            call["function"]["name"] = function.get("name", call["function"].get("name"))
            call["function"]["arguments"] += function.get("arguments", "")
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {
        "id": "chatcmpl-doctor",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish}],
        "usage": _usage(body, reply),
    }


def _usage(body: dict[str, Any], reply: Reply) -> dict[str, int]:
    # Rough, as a server's own counts are: a quarter of the characters.
    prompt = len(json.dumps(body.get("messages", []))) // 4
    out = max(1, len(json.dumps(reply.deltas)) // 4)
    return {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}


def chunks(reply: Reply, body: dict[str, Any]) -> Iterator[bytes]:
    """`reply` as the SSE chunks of a stream, `[DONE]` last (none when it is cut)."""

    def event(delta: dict[str, Any], finish: str | None = None, **more: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        data = {"id": "chatcmpl-doctor", "object": "chat.completion.chunk", "created": 0}
        data |= {"model": MODEL, "choices": [choice], **more}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    yield event({"role": "assistant", "content": ""})
    for delta in reply.deltas:
        yield event(delta)
    if reply.cut:
        return
    yield event({}, reply.finish)
    usage = {"id": "chatcmpl-doctor", "object": "chat.completion.chunk", "created": 0}
    usage |= {"model": MODEL, "choices": [], "usage": _usage(body, reply)}
    yield b"data: " + json.dumps(usage).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


class _Stream(httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes], cut: bool) -> None:
        self._parts = parts
        self._cut = cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            yield part
        if self._cut:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


@dataclass
class ScriptedUpstream(httpx.AsyncBaseTransport):
    """An OpenAI-compatible server in this process: `GET /models` lists `MODEL`; `POST
    /chat/completions` answers by `script`. `seen` keeps every completion request."""

    seen: list[Seen] = field(default_factory=list)
    _attempts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path.endswith("/models"):
            listing = {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
            return httpx.Response(200, json=listing)
        if request.method != "POST" or not path.endswith("/chat/completions"):
            return httpx.Response(404, json={"error": {"message": f"no route {path}"}})
        body = json.loads(await request.aread())
        found = marker(body)
        case = found[0] if found else None
        with self._lock:
            self.seen.append(Seen(case, body))
            self._attempts[case or ""] += 1
            attempt = self._attempts[case or ""]
        reply = script(body, attempt)
        if reply.error is not None:
            error = {"message": reply.error, "type": "invalid_request_error", "code": None}
            return httpx.Response(reply.status, json={"error": error})
        if not body.get("stream"):
            return httpx.Response(200, json=completion(reply, body))
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=_Stream(list(chunks(reply, body)), reply.cut),
        )

    def requests(self, case: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.case == case]
