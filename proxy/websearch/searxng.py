"""SearXNG's JSON API (`GET /search?format=json`; the instance must allow the json format)."""

from __future__ import annotations

from ..core.web_search import SearchTool
from .call import Call, site_terms

ENDPOINT = ""
"""None: a SearXNG backend always has its own `url`."""
RESULTS = ("results",)
"""Where the results are in an answer, and the fields giving the excerpt and the date."""
SNIPPET = "content"
DATES = ("publishedDate",)


def request(query: str, tool: SearchTool, url: str, key: str, limit: int) -> Call:
    params = {"q": site_terms(query, tool.allowed_domains, tool.blocked_domains), "format": "json"}
    return Call("GET", url.rstrip("/") + "/search", params=params)
