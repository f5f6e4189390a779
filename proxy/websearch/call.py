"""What a backend asks for: one HTTP request, described, made by `searcher.Searcher`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.web_search import Result


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def read_results(
    data: Any, path: tuple[str, ...], snippet: str, dates: tuple[str, ...]
) -> list[Result]:
    """The results of a search API's answer: the objects of the list at `path`, each with a
    `url`, a `title`, its excerpt in `snippet` and its date in the first of `dates` it has.
    Whatever else the answer holds (or lacks) is ignored."""
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    found = [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
    return [
        Result(
            _text(item.get("url")),
            _text(item.get("title")),
            _text(item.get(snippet)),
            next((_text(item[d]) for d in dates if _text(item.get(d))), None),
        )
        for item in found
    ]


def site_terms(query: str, allowed: tuple[str, ...], blocked: tuple[str, ...]) -> str:
    """The query with `site:` operators, for engines that filter domains only that way."""
    terms = [query]
    if allowed:
        terms.append("(" + " OR ".join(f"site:{d}" for d in allowed) + ")")
    terms += [f"-site:{d}" for d in blocked]
    return " ".join(terms)
