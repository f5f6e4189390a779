"""Anthropic's `web_search` server tool on upstreams that cannot run it (PROTOCOL.md 12).

The model is offered a `web_search` function in its place; the proxy runs the searches it asks
for and shows the client what the API would: a `server_tool_use` block, then a
`web_search_tool_result` block. Each result's `encrypted_content` is the result itself,
versioned and base64url-encoded: not secret, only opaque, so that a later request holding the
blocks gives the model back what it searched and found with no state kept in the proxy.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args

from ..models import anthropic as a
from .errors import InvalidRequest

NAME = "web_search"
TOOL_TYPE_PREFIX = "web_search_"
DESCRIPTION = (
    "Search the web for current information. Returns numbered results with title, URL, date "
    "and an excerpt. Search when the answer needs facts you may not know or that change over "
    "time; cite the URLs of the results you use."
)
PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"query": {"type": "string", "description": "The search query"}},
    "required": ["query"],
    "additionalProperties": False,
}
ErrorCode = Literal[
    "invalid_tool_input",
    "unavailable",
    "max_uses_exceeded",
    "too_many_requests",
    "query_too_long",
    "request_too_large",
]
ERROR_CODES: tuple[ErrorCode, ...] = get_args(ErrorCode)
MAX_QUERY_CHARS = 400
"""Longer queries get `query_too_long` (search APIs cut or refuse them)."""
MAX_SNIPPET_CHARS = 1000
MAX_TITLE_CHARS = 300
MAX_URL_CHARS = 2000
CONTENT_PREFIX = "cbws1."
SERVER_ID_PREFIX = "srvtoolu_"
CLIENT_ID_PREFIX = "toolu_"


@dataclass(frozen=True)
class SearchTool:
    """What the request's `web_search_*` tool asks of every search in this turn."""

    max_uses: int | None = None
    allowed_domains: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()
    country: str | None = None
    """ISO 3166-1 alpha-2, from `user_location`."""
    user_location: dict[str, Any] | None = None


@dataclass(frozen=True)
class Result:
    url: str
    title: str
    snippet: str = ""
    page_age: str | None = None


class SearchFailed(Exception):
    """A search that gave no results: becomes a result block with `code`, never a failed
    request. `detail` is for the model and the logs (never holds a key)."""

    def __init__(self, code: ErrorCode, detail: str = "") -> None:
        super().__init__(detail or code)
        self.code: ErrorCode = code
        self.detail = detail


# -- the request's tool -------------------------------------------------------------------


def is_search_tool(tool: Any) -> bool:
    return isinstance(tool, a.BuiltinTool) and tool.type.startswith(TOOL_TYPE_PREFIX)


def search_tool(tools: Iterable[Any]) -> SearchTool | None:
    """The request's `web_search` tool, checked as the API checks it (400 on both lists)."""
    tool = next((t for t in tools if is_search_tool(t)), None)
    if tool is None:
        return None
    extra = tool.model_extra or {}
    allowed, blocked = extra.get("allowed_domains"), extra.get("blocked_domains")
    if allowed and blocked:
        raise InvalidRequest(
            "web_search tool: allowed_domains and blocked_domains cannot both be set"
        )
    max_uses = extra.get("max_uses")
    if max_uses is not None and (type(max_uses) is not int or max_uses < 1):
        raise InvalidRequest("web_search tool: max_uses must be a positive integer")
    location = extra.get("user_location")
    location = location if isinstance(location, dict) else None
    country = location.get("country") if location else None
    return SearchTool(
        max_uses=max_uses,
        allowed_domains=_domains(allowed, "allowed_domains"),
        blocked_domains=_domains(blocked, "blocked_domains"),
        country=country if isinstance(country, str) and len(country) == 2 else None,
        user_location=location,
    )


def _domains(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(d, str) and d for d in value):
        raise InvalidRequest(f"web_search tool: {field} must be a list of domain names")
    return tuple(d.lower().removeprefix("https://").removeprefix("http://") for d in value)


def function_definition() -> tuple[str, dict[str, Any]]:
    """(description, parameters) of the function the model is offered in the tool's place."""
    return DESCRIPTION, PARAMETERS


def native(native_web_search: bool, dialect: str, profile_name: str) -> bool:
    """Whether the upstream runs the searches itself: asked for (`backend = "upstream"`), and
    it can (the Responses API; OpenRouter's Chat Completions). Else the proxy runs them."""
    return native_web_search and (dialect == "responses" or profile_name == "openrouter")


def upstream_calls(data: Any) -> list[dict[str, Any]]:
    """The searches a non-streamed Responses answer says the upstream ran (`web_search_call`
    items), in order."""
    output = data.get("output") if isinstance(data, dict) else None
    items = output if isinstance(output, list) else []
    return [i for i in items if isinstance(i, dict) and i.get("type") == "web_search_call"]


def openrouter_tool(tool: SearchTool) -> dict[str, Any]:
    """OpenRouter's own search, as a server tool of its Chat Completions (PROTOCOL.md 12.3)."""
    parameters: dict[str, Any] = {}
    if tool.allowed_domains:
        parameters["allowed_domains"] = list(tool.allowed_domains)
    if tool.blocked_domains:
        parameters["excluded_domains"] = list(tool.blocked_domains)
    return {"type": "openrouter:web_search", "parameters": parameters}


def responses_tool(tool: SearchTool) -> tuple[dict[str, Any], list[str]]:
    """The Responses API's own `web_search` tool, and what it cannot say (blocked domains)."""
    native: dict[str, Any] = {"type": "web_search"}
    if tool.allowed_domains:
        native["filters"] = {"allowed_domains": list(tool.allowed_domains)}
    if tool.user_location:
        native["user_location"] = {"type": "approximate", **tool.user_location}
    dropped = ["web_search blocked_domains (the Responses API has no such filter)"]
    return native, dropped if tool.blocked_domains else []


# -- results ------------------------------------------------------------------------------


def domain_matches(url: str, domain: str) -> bool:
    """`url` is on `domain` (`example.com` also covers its subdomains) and, for a domain with
    a path (`example.com/blog`), under that path."""
    host_part, _, path = domain.partition("/")
    host, url_path = _host_and_path(url)
    if host != host_part and not host.endswith("." + host_part):
        return False
    return not path or url_path.startswith(path)


def _host_and_path(url: str) -> tuple[str, str]:
    """An http(s) URL's host (lower case, no user or port) and path (no leading slash); two
    empty strings for anything else. (The core does no I/O and imports no urllib.)"""
    scheme, found, rest = url.partition("://")
    if not found or scheme.lower() not in ("http", "https"):
        return "", ""
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, path = rest[:end].rpartition("@")[2], rest[end:]
    host = netloc[1:].partition("]")[0] if netloc.startswith("[") else netloc.partition(":")[0]
    return host.lower(), path.partition("?")[0].partition("#")[0].lstrip("/")


def kept(results: Iterable[Result], tool: SearchTool, limit: int) -> list[Result]:
    """The first `limit` results the tool's domain lists allow (backends that filter still get
    checked: SearXNG's `site:` is only a hint to its engines), with their text capped."""
    out: list[Result] = []
    for result in results:
        if len(out) >= limit:
            break
        if not _host_and_path(result.url)[0] or len(result.url) > MAX_URL_CHARS:
            continue
        if tool.allowed_domains and not any(
            domain_matches(result.url, d) for d in tool.allowed_domains
        ):
            continue
        if any(domain_matches(result.url, d) for d in tool.blocked_domains):
            continue
        out.append(
            Result(
                url=result.url,
                title=(result.title or result.url)[:MAX_TITLE_CHARS],
                snippet=result.snippet[:MAX_SNIPPET_CHARS],
                page_age=result.page_age[:64] if result.page_age else None,
            )
        )
    return out


def checked_query(arguments: Any) -> str:
    """The query of the model's call, or `SearchFailed` as the API reports bad tool input."""
    query = arguments.get("query") if isinstance(arguments, dict) else None
    if not isinstance(query, str) or len(query.strip()) < 2:
        raise SearchFailed("invalid_tool_input", "the call needs a `query` of 2 characters or more")
    if len(query) > MAX_QUERY_CHARS:
        raise SearchFailed("query_too_long", f"queries are limited to {MAX_QUERY_CHARS} characters")
    return query.strip()


def encode_content(result: Result) -> str:
    data = {"u": result.url, "t": result.title, "s": result.snippet, "a": result.page_age}
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return CONTENT_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii")


def decode_content(token: Any) -> Result | None:
    """The result an `encrypted_content` of ours holds; None for anyone else's."""
    if not isinstance(token, str) or not token.startswith(CONTENT_PREFIX):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token[len(CONTENT_PREFIX) :]))
        return Result(str(data["u"]), str(data["t"]), str(data["s"]), data.get("a"))
    except (ValueError, KeyError, TypeError):  # binascii.Error is a ValueError
        return None


# -- blocks the client gets ---------------------------------------------------------------


def server_id(call_id: str) -> str:
    """The `server_tool_use` id of a search the model asked for with the tool_use id `call_id`
    (the stream translator's, which may carry a thought signature: kept, see `call_id`)."""
    return SERVER_ID_PREFIX + call_id.removeprefix(CLIENT_ID_PREFIX)


def call_id(server_tool_id: str) -> str:
    """The tool_use id the upstream's call had, back from a `server_tool_use` id."""
    if server_tool_id.startswith(SERVER_ID_PREFIX):
        return CLIENT_ID_PREFIX + server_tool_id[len(SERVER_ID_PREFIX) :]
    return server_tool_id


def server_tool_use(block_id: str, query_input: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "server_tool_use",
        "id": block_id,
        "name": NAME,
        "input": query_input,
        "caller": {"type": "direct"},
    }


def result_block(tool_use_id: str, outcome: list[Result] | SearchFailed) -> dict[str, Any]:
    content: Any
    if isinstance(outcome, SearchFailed):
        content = {"type": "web_search_tool_result_error", "error_code": outcome.code}
    else:
        content = [
            {
                "type": "web_search_result",
                "url": r.url,
                "title": r.title,
                "encrypted_content": encode_content(r),
                "page_age": r.page_age,
            }
            for r in outcome
        ]
    return {
        "type": "web_search_tool_result",
        "tool_use_id": tool_use_id,
        "content": content,
        "caller": {"type": "direct"},
    }


def with_search_usage(usage: dict[str, Any], searches: int) -> dict[str, Any]:
    return {**usage, "server_tool_use": {"web_search_requests": searches, "web_fetch_requests": 0}}


CITED_TEXT_CHARS = 150
INDEX_PREFIX = "cbwi1."


Span = tuple[int, int, str, str | None]
"""A cited span of the upstream's answer text: (start, end, url, title)."""


def url_citations(data: Any) -> list[Span]:
    """The spans each `url_citation` a non-streamed upstream answer carries cite: Chat
    Completions' nested form (OpenRouter, the search models) or the Responses API's flat one,
    on the answer's text (PROTOCOL.md 12.3)."""
    found: list[Any] = []
    if isinstance(data, dict):
        for choice in data.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict) and isinstance(message.get("annotations"), list):
                found += message["annotations"]
        for item in data.get("output") or ():
            for part in (item.get("content") if isinstance(item, dict) else None) or ():
                if isinstance(part, dict) and isinstance(part.get("annotations"), list):
                    found += part["annotations"]
    return _spans(found)


def streamed_citations(event: Any) -> list[Span]:
    """The spans one upstream stream event cites: a Chat Completions chunk's
    `delta.annotations`, or a Responses `response.output_text.annotation.added` (not the
    annotation lists the Responses API repeats in its `done` events: each is added once)."""
    if not isinstance(event, dict):
        return []
    if event.get("type") == "response.output_text.annotation.added":
        return _spans([event.get("annotation")])
    found: list[Any] = []
    for choice in event.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("annotations"), list):
            found += delta["annotations"]
    return _spans(found)


def _spans(annotations: list[Any]) -> list[Span]:
    spans = []
    for annotation in annotations:
        if not isinstance(annotation, dict) or annotation.get("type") != "url_citation":
            continue
        cited = annotation.get("url_citation", annotation)
        if not isinstance(cited, dict):
            continue
        start, end, url = cited.get("start_index"), cited.get("end_index"), cited.get("url")
        if type(start) is int and type(end) is int and isinstance(url, str) and 0 <= start < end:
            title = cited.get("title")
            spans.append((start, end, url, title if isinstance(title, str) else None))
    return sorted(spans)


def location(cited_text: str, url: str, title: str | None) -> dict[str, Any]:
    """The `web_search_result_location` citation of `cited_text` from `url`; its
    `encrypted_index` says where (the source), as the API's does, opaque but readable back."""
    where = json.dumps({"u": url, "t": title}, ensure_ascii=False, separators=(",", ":"))
    return {
        "type": "web_search_result_location",
        "url": url,
        "title": title,
        "cited_text": cited_text[:CITED_TEXT_CHARS],
        "encrypted_index": INDEX_PREFIX + base64.urlsafe_b64encode(where.encode()).decode(),
    }


def cited(message: dict[str, Any], spans: list[Span]) -> None:
    """The message's text split where `spans` cite a source, each cited span a text block of
    its own with a `web_search_result_location` citation, as the API sends them. Only for a
    message with one text block (the spans count in the upstream's one text)."""
    content = message.get("content") or []
    texts = [i for i, block in enumerate(content) if block.get("type") == "text"]
    if not spans or len(texts) != 1:
        return
    text = content[texts[0]]["text"]
    blocks: list[dict[str, Any]] = []
    position = 0
    for start, end, url, title in spans:
        if start < position or end > len(text):
            continue  # overlapping or beyond the text: left out
        if start > position:
            blocks.append({"type": "text", "text": text[position:start]})
        span = text[start:end]
        blocks.append({"type": "text", "text": span, "citations": [location(span, url, title)]})
        position = end
    if position < len(text):
        blocks.append({"type": "text", "text": text[position:]})
    message["content"] = content[: texts[0]] + blocks + content[texts[0] + 1 :]


# -- what the model reads -----------------------------------------------------------------


def function_output(query: str, outcome: list[Result] | SearchFailed) -> str:
    if isinstance(outcome, SearchFailed):
        detail = f": {outcome.detail}" if outcome.detail else ""
        return f'Web search for "{query}" failed ({outcome.code}){detail}'
    if not outcome:
        return f'Web search for "{query}" found no results.'
    lines = [f'Web search results for "{query}":']
    for number, result in enumerate(outcome, 1):
        lines += ["", f"[{number}] {result.title}", f"URL: {result.url}"]
        if result.page_age:
            lines.append(f"Published: {result.page_age}")
        if result.snippet:
            lines.append(result.snippet)
    lines += ["", "Cite the URLs of the results you use."]
    return "\n".join(lines)


def outcome_of(content: Any) -> list[Result] | SearchFailed:
    """What a `web_search_tool_result` block's content says was found: our results whole,
    anyone else's by title and URL; or the error."""
    if isinstance(content, dict):
        code = content.get("error_code")
        detail = content.get("detail")  # the proxy's own note, within one answer
        known: ErrorCode = next((c for c in ERROR_CODES if c == code), "unavailable")
        return SearchFailed(known, str(detail or ""))
    results = []
    for item in content if isinstance(content, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            continue
        result = decode_content(item.get("encrypted_content"))
        if result is None:
            result = Result(item["url"], str(item.get("title") or ""), "", item.get("page_age"))
        results.append(result)
    return results


def history_output(query: str, content: Any) -> str:
    """The function output for a `web_search_tool_result` block sent back in a later request."""
    return function_output(query, outcome_of(content))


def is_search_use(block: Any) -> bool:
    return isinstance(block, a.ServerToolUseBlock) and block.name == NAME


def is_search_result(block: Any) -> bool:
    return isinstance(block, a.ServerToolResultBlock) and block.type == "web_search_tool_result"


def query_of(block: a.ServerToolUseBlock) -> str:
    query = block.input.get("query") if isinstance(block.input, dict) else None
    return query if isinstance(query, str) else ""


Round = tuple[list[Any], list[tuple[a.ServerToolUseBlock, a.ServerToolResultBlock]]]
# Validated blocks are of these very classes (nothing subclasses the wire models).
_SERVER_BLOCKS = frozenset((a.ServerToolUseBlock, a.ServerToolResultBlock))


def rounds(blocks: list[Any]) -> Iterator[Round]:
    """An assistant turn cut after each group of search results: (the blocks up to the
    searches, each search with its result). Chat Completions needs the tool messages between
    the assistant message that called and the one that went on. A search whose result is not
    there is left out: the upstream would refuse a call without its output."""
    if _SERVER_BLOCKS.isdisjoint(map(type, blocks)):  # most turns; one pass in C
        if blocks:
            yield blocks, []
        return
    answered = {b.tool_use_id: b for b in blocks if is_search_result(b)}
    uses = {b.id: b for b in blocks if is_search_use(b) and b.id in answered}
    part: list[Any] = []
    done: list[tuple[a.ServerToolUseBlock, a.ServerToolResultBlock]] = []
    for block in blocks:
        if is_search_result(block):
            use = uses.get(block.tool_use_id)
            if use is not None:
                done.append((use, block))
            continue
        if is_search_use(block) and block.id not in uses:
            continue
        if done:
            yield part, done
            part, done = [], []
        part.append(block)
    if part or done:
        yield part, done


def side_request_query(request: a.MessagesRequest) -> str | None:
    """The query of Claude Code's WebSearch side request (PROTOCOL.md 12.2): one
    `web_search` tool and one user message asking to search for it; None for anything else."""
    tools = request.tools or []
    if len(tools) != 1 or not is_search_tool(tools[0]):
        return None
    turns = [m for m in request.messages if m.role != "system"]
    if len(turns) != 1 or turns[0].role != "user":
        return None
    text = "".join(b.text for b in turns[0].content if isinstance(b, a.TextBlock))
    marker = "Perform a web search for the query: "
    return text[len(marker) :].strip() if text.startswith(marker) else None
