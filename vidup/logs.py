"""Logging for every vidup process: plain text by default, one JSON object per line with
``VIDUP_LOG_FORMAT=json``, so one video can be followed across the ingest, the operator and the
workers by its ``video_id`` (and one HTTP request by its ``request_id``).

A JSON line holds ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, ``component``,
``pid``, the context fields ``video_id`` / ``request_id`` / ``job_id`` when known, ``exc_info``
(the formatted traceback) when there is one, and any simple-valued ``extra`` a caller passed.
Context fields come from :func:`bind` / :func:`bound` (a :mod:`contextvars` variable, so threads and
asyncio tasks keep their own) or from the record itself (``extra={"video_id": ...}``, which wins);
Kopf's per-object records carry the resource in ``k8s_ref``, whose name is the video id.

Only the standard library: every component (and the `vidup` CLI) imports this module.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from vidup.resource import KIND

#: The fields a unit of work (a request, a job, a reconcile) can bind.
CONTEXT_FIELDS = ("video_id", "request_id", "job_id")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"

_context: ContextVar[Mapping[str, str]] = ContextVar("vidup_log_context", default={})  # noqa: B039

# Attributes every LogRecord has (plus the ones formatting adds): never copied as extras.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Extras a record may carry that are not ours to print: Kopf's settings object and its object ref.
_SKIPPED_PREFIXES = ("k8s_", "settings")


def log_format() -> str:
    """``VIDUP_LOG_FORMAT``: ``text`` (default) or ``json``; anything else is an error, so a typo
    does not silently produce the format nobody asked for."""
    value = os.environ.get("VIDUP_LOG_FORMAT", "text").strip().lower() or "text"
    if value not in FORMATS:
        raise ValueError(f"VIDUP_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


def json_enabled() -> bool:
    return log_format() == "json"


def log_level(default: str = "INFO") -> str:
    """``VIDUP_LOG_LEVEL`` (DEBUG, INFO, WARNING, ERROR), upper-cased; ``default`` when unset."""
    return (os.environ.get("VIDUP_LOG_LEVEL") or default).strip().upper()


def context() -> dict[str, str]:
    """The ids bound in the current thread or task."""
    return dict(_context.get())


def bind(**fields: str | None) -> Token[Mapping[str, str]]:
    """Add ids to the current context (None removes one); returns the token :func:`reset` takes."""
    merged = {**_context.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
    for key in (k for k, v in fields.items() if v is None):
        merged.pop(key, None)
    return _context.set(merged)


def start(**fields: str | None) -> None:
    """Begin a new unit of work in this thread: replace whatever the previous one bound. For
    servers whose threads run one request after another (gunicorn's gthread): the ids stay bound
    until the next request starts, so lines logged while a streamed body is sent keep them too."""
    _context.set({k: str(v) for k, v in fields.items() if v is not None})


def reset(token: Token[Mapping[str, str]]) -> None:
    _context.reset(token)


@contextlib.contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Bind ids for the duration of a block (a job, a reconcile)."""
    token = bind(**fields)
    try:
        yield
    finally:
        reset(token)


def _rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _simple(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (tracebacks included, as a string field)."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "component": self.component,
            "pid": record.process,
        }
        fields: dict[str, Any] = dict(_context.get())
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, Mapping) and ref.get("kind") == KIND and ref.get("name"):
            fields["video_id"] = str(ref["name"])
        for key, value in vars(record).items():
            if key in _RECORD_ATTRS or key.startswith(_SKIPPED_PREFIXES) or not _simple(value):
                continue
            fields[key] = value
        doc.update({k: v for k, v in fields.items() if v is not None and v != ""})
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc_info"] = record.exc_text
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def formatter(component: str) -> logging.Formatter:
    """The formatter ``VIDUP_LOG_FORMAT`` asks for."""
    return JsonFormatter(component) if json_enabled() else logging.Formatter(TEXT_FORMAT)


def configure(component: str, level: str | None = None, *, keep_text_handlers: bool = False) -> bool:
    """Send the root logger's records to stderr in the configured format; returns True for JSON.

    ``level`` defaults to ``VIDUP_LOG_LEVEL`` (INFO). In JSON mode every existing root handler is
    replaced (a framework's own, e.g. Kopf's, would print text), Python warnings go through logging
    and uncaught exceptions (main thread and others) become JSON records instead of bare tracebacks.
    ``keep_text_handlers``: in text mode, leave a framework's handler that is already installed
    (Kopf's prefixes each line with the object it is about).
    """
    root = logging.getLogger()
    root.setLevel(level or log_level())
    as_json = json_enabled()
    if not as_json and keep_text_handlers and root.handlers:
        return False
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(component))
    root.addHandler(handler)
    if as_json:
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread
    return as_json


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("vidup").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("vidup").error("uncaught exception in thread %s", name,
                                     exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
