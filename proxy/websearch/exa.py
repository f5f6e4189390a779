"""Exa's search API."""

from __future__ import annotations

from typing import Any

from ..core.web_search import SearchTool
from .call import Call

ENDPOINT = "https://api.exa.ai/search"
RESULTS = ("results",)
"""Where the results are in an answer, and the fields giving the excerpt and the date."""
SNIPPET = "text"
DATES = ("publishedDate",)
SNIPPET_CHARS = 1000


def request(query: str, tool: SearchTool, url: str, key: str, limit: int) -> Call:
    body: dict[str, Any] = {
        "query": query,
        "numResults": limit,
        "contents": {"text": {"maxCharacters": SNIPPET_CHARS}},
    }
    if tool.allowed_domains:
        body["includeDomains"] = list(tool.allowed_domains)
    if tool.blocked_domains:
        body["excludeDomains"] = list(tool.blocked_domains)
    if tool.country:
        body["userLocation"] = tool.country.upper()
    return Call("POST", url, json=body, headers={"x-api-key": key})
