"""The search backend of `doctor --claude`'s WebSearch case: a SearXNG instance's JSON API, as
the proxy's `searxng` backend asks it (`GET /search?q=...&format=json`), served on loopback by a
thread of this process.

No network, no key: it answers every query with the same one result, so the grid can tell that
result's URL in what Claude Code reports. A real socket, not an injected transport, because the
proxy's searcher is built with the app and talks only to its configured `url`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

LOOPBACK = "127.0.0.1"
RESULT_URL = "https://claude-bridge.invalid/doctor/web-search-result"
RESULT_TITLE = "claude-bridge doctor: the scripted search result"
RESULT_CONTENT = "The page the doctor's search backend finds for every query."


def answer(query: str) -> dict[str, Any]:
    """What a SearXNG instance answers: the query and a `results` list of url/title/content."""
    result = {"url": RESULT_URL, "title": RESULT_TITLE, "content": RESULT_CONTENT}
    return {"query": query, "number_of_results": 1, "results": [result]}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = parse_qs(parts.query)
        if parts.path != "/search" or params.get("format") != ["json"]:
            self.send_error(404)
            return
        body = json.dumps(answer(params.get("q", [""])[0])).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: Claude Code's runs own the terminal."""


@contextlib.contextmanager
def searxng() -> Iterator[str]:
    """The backend's URL (the proxy's `[web_search] url`) while the block runs."""
    server = ThreadingHTTPServer((LOOPBACK, 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="claude-bridge-doctor-searxng")
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
