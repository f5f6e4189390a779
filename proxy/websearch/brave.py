"""Brave Search's web search API."""

from __future__ import annotations

from ..core.web_search import SearchTool
from .call import Call, site_terms

ENDPOINT = "https://api.search.brave.com/res/v1/web/search"
RESULTS = ("web", "results")
"""Where the results are in an answer, and the fields giving the excerpt and the date."""
SNIPPET = "description"
DATES = ("page_age", "age")


def request(query: str, tool: SearchTool, url: str, key: str, limit: int) -> Call:
    params = {
        "q": site_terms(query, tool.allowed_domains, tool.blocked_domains),
        # Asked for more than kept: domain filtering may drop some.
        "count": str(min(20, limit * 2)),
    }
    if tool.country:
        params["country"] = tool.country.lower()
    headers = {"Accept": "application/json", "X-Subscription-Token": key}
    return Call("GET", url, params=params, headers=headers)
