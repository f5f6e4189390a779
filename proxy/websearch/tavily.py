"""Tavily's search API."""

from __future__ import annotations

from typing import Any

from ..core.web_search import SearchTool
from .call import Call

ENDPOINT = "https://api.tavily.com/search"
RESULTS = ("results",)
"""Where the results are in an answer, and the fields giving the excerpt and the date."""
SNIPPET = "content"
DATES = ("published_date",)


def request(query: str, tool: SearchTool, url: str, key: str, limit: int) -> Call:
    body: dict[str, Any] = {"query": query, "max_results": limit, "search_depth": "basic"}
    if tool.allowed_domains:
        body["include_domains"] = list(tool.allowed_domains)
    if tool.blocked_domains:
        body["exclude_domains"] = list(tool.blocked_domains)
    return Call("POST", url, json=body, headers={"Authorization": f"Bearer {key}"})
