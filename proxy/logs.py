"""Structured logs: JSON records with the request id, secrets scrubbed, uvicorn folded in.

Where records go (`configure`):

- a JSON file (`--log-file`), rotated by size, gets everything at the configured level:
  the request records of `RequestLog`, the pipeline's own operations (routing decision, fields
  not sent upstream), uvicorn's server and access records;
- the console (stderr) gets warnings and errors, or everything at `debug`, but never the
  request records nor uvicorn's access lines: the dashboard, the request lines or the JSON
  event stream already show each request once.

The request id reaches every record logged while a request runs, whichever module logs it:
`RequestLog` binds it in a context variable when the request starts, and `RequestIdFilter`
copies it onto each record.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import re
import sys
import time
from collections.abc import Iterable, Mapping
from io import TextIOWrapper
from pathlib import Path
from typing import Any, TextIO

from .config import ConfigError
from .events import Exchange
from .files import open_private
from .resilience.failover import failed_over

# uvicorn adds `color_message`: the same text with terminal colours.
_CACHE = "_claude_bridge_json"
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message", _CACHE}

REQUESTS_LOGGER = "claude_bridge.requests"
ACCESS_LOGGER = "uvicorn.access"
# Rotation of the log file: five files of 10 MB at most.
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 4
# Strings in logged bodies are cut to this many characters.
BODY_STRING_LIMIT = 200

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "claude_bridge_request_id", default=None
)

# Credentials that can turn up in free text: header values, `key=value` pairs, bare keys.
_SECRET_PATTERNS = [
    re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(
        r"(?i)\b(x-api-key|api[_-]?key|authorization|auth[_-]?token|access[_-]?token|secret)"
        r"(\\?[\"']?\s*[:=]\s*\\?[\"']?(?:(?:Basic|Digest|Token)\s+)?)"
        r"(?!Bearer\b|\[redacted\])[^\s\"'\\,}&]{4,}"
    ),
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
]
# Cheap tests that let a line skip those patterns (most lines: a regex pass costs ~20 µs).
_SECRET_HINTS = (
    ("bearer",),
    ("api-key", "api_key", "apikey", "authorization", "auth_token", "auth-token", "authtoken",
     "access_token", "access-token", "accesstoken", "secret"),
    ("sk-",),
)  # fmt: skip
_SECRET_KEYS = re.compile(
    r"(?i)^(x-api-key|api[_-]?key|authorization|auth[_-]?token|access[_-]?token|token|secret|"
    r"password|proxy-authorization|cookie)$"
)
REDACTED = "[redacted]"


class Redactor:
    """Removes known secret values and anything shaped like a credential from text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is removed whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        lowered = text.lower()
        replacements = (rf"\1 {REDACTED}", rf"\1\2{REDACTED}", f"sk-{REDACTED}")
        for pattern, hints, replacement in zip(
            _SECRET_PATTERNS, _SECRET_HINTS, replacements, strict=True
        ):
            if any(hint in lowered for hint in hints):
                text = pattern.sub(replacement, text)
        return text


# The scrubber `configure` built, for `log_body`: it cuts strings before a formatter sees them.
_body_redactor = Redactor()


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg, request_id, any `extra` fields, exc."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        # A rotating file handler formats each record twice (once to size it): once is enough.
        cached = record.__dict__.get(_CACHE)
        if cached is not None and cached[0] is self:
            return str(cached[1])
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if data.get("request_id") is None:
            data.pop("request_id", None)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        text = self.redact(json.dumps(data, ensure_ascii=False, default=str))
        record.__dict__[_CACHE] = (self, text)
        return text


class TextFormatter(logging.Formatter):
    """The console's short form: `12:00:01 WARNING claude_bridge.app: message [req_…]`."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        self.redact = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None)
        return self.redact(f"{text} [{rid}]" if rid else text)


class RequestIdFilter(logging.Filter):
    """Puts the running request's id on records that do not carry one already."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class AccessFilter(logging.Filter):
    """uvicorn's access line as fields (client, method, path, status) instead of a sentence."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == ACCESS_LOGGER and isinstance(args, tuple) and len(args) == 5:
            client, method, path, http_version, status = args
            record.msg, record.args = "http %s %s %s", (method, path, status)
            record.client, record.method, record.path = client, method, path
            record.http_version, record.status = http_version, status
        return True


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith((REQUESTS_LOGGER, ACCESS_LOGGER))


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Rotated log files created 0600 whatever the umask (renamed backups keep the mode)."""

    def _open(self) -> TextIOWrapper:
        return open_private(Path(self.baseFilename), self.encoding, self.errors)


class StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is at the time, so a live display that redirects stderr
    (rich's `Live`) prints log lines above itself instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def configure(
    level: str = "info",
    stream: TextIO | None = None,
    *,
    file: Path | None = None,
    console_format: str = "json",
    secrets: Iterable[str] = (),
    max_bytes: int = MAX_BYTES,
    backups: int = BACKUPS,
) -> None:
    """Send claude_bridge's and uvicorn's records to the console and, given `file`, to a
    rotated JSON file. `console_format` is "json" or "text"; `secrets` are scrubbed from both.
    """
    global _body_redactor
    redactor = _body_redactor = Redactor(secrets)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    console: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else StderrHandler()
    )
    console.setFormatter(
        JsonFormatter(redactor) if console_format == "json" else TextFormatter(redactor)
    )
    console.setLevel(logging.DEBUG if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    console.addFilter(_ConsoleFilter())
    handlers = [console]
    if file is not None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            rotating = PrivateRotatingFileHandler(
                file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(f"--log-file {file}: cannot write it ({reason})") from None
        rotating.setFormatter(JsonFormatter(redactor))
        rotating.setLevel(numeric)
        handlers.append(rotating)
    for handler in handlers:
        handler.addFilter(RequestIdFilter())
        handler.addFilter(AccessFilter())
    for name in ("claude_bridge", "uvicorn"):
        logger = logging.getLogger(name)
        for old in logger.handlers:
            if old not in handlers:
                old.close()
        logger.handlers[:] = handlers
        logger.setLevel(numeric)
        logger.propagate = False
    # uvicorn's children log through "uvicorn"; levels or handlers a previous run left go.
    for name in ("uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        child = logging.getLogger(name)
        child.handlers[:] = []
        child.setLevel(logging.NOTSET)
        child.propagate = True


def exchange_record(kind: str, exchange: Exchange) -> dict[str, Any]:
    """The facts of one request event as plain JSON data: for log files and `--log-format json`.

    `kind` is the bus event; a finished request that failed is reported as "error".
    """
    event = "error" if kind == "finish" and failed(exchange) else kind
    data: dict[str, Any] = {"event": event, "request_id": exchange.id, "route": exchange.route}
    if kind == "start":
        return data
    data.update(
        client_model=exchange.client_model or None,
        upstream=exchange.upstream or None,
        upstream_model=exchange.upstream_model or None,
        stream=exchange.stream,
        session_id=exchange.session_id,
        agent_id=exchange.agent_id,
        routed_by=exchange.routed_by or None,
    )
    if kind != "finish":
        return data
    data.update(
        status=exchange.status,
        duration_ms=_ms(exchange.duration),
        ttft_ms=_ms(exchange.ttft),
        input_tokens=exchange.input_tokens,
        cached_tokens=exchange.cached_tokens,
        cache_write_tokens=exchange.cache_write_tokens,
        output_tokens=exchange.output_tokens,
        reasoning_tokens=exchange.reasoning_tokens,
        stop_reason=exchange.stop_reason,
    )
    if exchange.cost is not None:
        data.update(exchange.cost.fields())
    if exchange.cancelled:
        data["cancelled"] = True  # by its client, with the tokens streamed until then
    if exchange.searches:  # web searches the proxy ran inside the answer
        data.update(web_searches=exchange.searches, web_search_failures=exchange.search_failures)
    if exchange.error is not None:
        data.update(error_type=exchange.error_type, error=exchange.error)
    if exchange.notes:
        data["dropped"] = list(exchange.notes)
    if failed_over(exchange.attempts):
        data["attempts"] = [attempt.fields() for attempt in exchange.attempts]
    return data


def failed(exchange: Exchange) -> bool:
    """4xx/5xx, or a stream that began with 200 and ended with an `error` event."""
    return exchange.status >= 400 or exchange.error is not None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def handled(logger: logging.Logger, level: int) -> bool:
    """Whether a record of `level` logged on `logger` would reach a handler that takes it, as
    `Logger.callHandlers` decides. `isEnabledFor` alone says yes to the INFO record of every
    request when only a console showing warnings listens (`serve` without `--log-file`)."""
    if not logger.isEnabledFor(level):
        return False
    found = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if level >= handler.level:
                return True
            found = True
        if not current.propagate:
            break
        current = current.parent
    resort = logging.lastResort
    return not found and resort is not None and level >= resort.level


class RequestLog:
    """A bus listener: binds the request id for the request's other records, and logs each
    request's start (debug) and end (info; warning for 5xx and broken streams)."""

    KINDS = ("start", "finish")
    """The events it takes (`Bus.subscribe`)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger(REQUESTS_LOGGER)

    def __call__(self, kind: str, exchange: Exchange) -> None:
        if kind == "start":
            # Listeners run inside the request's task: later records of this request see it.
            request_id.set(exchange.id)
            if handled(self.log, logging.DEBUG):
                self.log.debug("request started", extra=exchange_record(kind, exchange))
        elif kind == "finish":
            bad = exchange.status >= 500 or (exchange.error is not None and exchange.status < 400)
            level = logging.WARNING if bad else logging.INFO
            if handled(self.log, level):
                record = exchange_record(kind, exchange)
                message = (
                    "request failed"
                    if record["event"] == "error"
                    else "request cancelled"
                    if exchange.cancelled
                    else "request finished"
                )
                self.log.log(level, message, extra=record)


def redact_body(data: Any, limit: int = BODY_STRING_LIMIT, redact: Redactor | None = None) -> Any:
    """A request or response body made fit for a debug log: values under credential-like keys
    replaced, long strings (prompts, base64 images) cut to `limit` characters, after `redact`
    (a key cut in two would keep its first characters past the formatter's redactor)."""
    if isinstance(data, Mapping):
        return {
            key: REDACTED if _SECRET_KEYS.match(str(key)) else redact_body(value, limit, redact)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [redact_body(item, limit, redact) for item in data]
    if isinstance(data, str) and len(data) > limit:
        if redact is not None:
            data = redact(data)
        return f"{data[:limit]}...(+{len(data) - limit} chars)" if len(data) > limit else data
    return data


def log_body(logger: logging.Logger, message: str, raw: bytes | Mapping[str, Any]) -> None:
    """Log a body at debug level only, redacted; free when debug is off."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    try:
        data = json.loads(raw) if isinstance(raw, bytes) else raw
    except ValueError:
        data = f"<{len(raw)} bytes, not JSON>"
    logger.debug(message, extra={"body": redact_body(data, redact=_body_redactor)})
