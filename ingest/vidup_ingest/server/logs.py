"""Gunicorn's own logs (its error log and the access log) as JSON lines, for ``VIDUP_LOG_FORMAT=json``.

Gunicorn gives its two loggers private handlers that do not propagate to the root logger, so
:func:`vidup.logs.configure` does not reach them; this logger class swaps their formatters. An
access line is one structured record (method, path, status, bytes, duration) whose ``request_id``
and ``video_id`` are read from the request and response themselves, not from the thread's
context: gunicorn writes it after the app returned, and for requests it rejects before the app
runs, where the thread still holds the previous request's ids.
"""

from __future__ import annotations

import re
import traceback
from datetime import timedelta
from typing import Any

from gunicorn import glogging

from vidup import logs

#: The upload (= video) id in the ingest's paths: /files/<id>, /videos/<id>[/...].
_VIDEO_PATH = re.compile(r"^/(?:files|videos)/([^/?]+)")


def video_id_of(path: str, location: str = "") -> str | None:
    """The video id an access line is about: from the path, or for a creation from its Location."""
    match = _VIDEO_PATH.match(path or "")
    if match:
        return match.group(1)
    tail = location.rstrip("/").rsplit("/files/", 1)
    return tail[1] if len(tail) == 2 and tail[1] else None


class JsonGunicornLogger(glogging.Logger):
    """Gunicorn's logger with JSON formatters on its handlers and a structured access line."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(logs.JsonFormatter("ingest"))

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if not self.access_log_enabled:
            return
        try:
            atoms = self.atoms(resp, req, environ, request_time)
            request_id = atoms.get("{x-request-id}o") or atoms.get("{x-request-id}i")
            path = str(atoms.get("U") or "")
            extra = {
                "method": atoms.get("m"), "path": path, "status": int(atoms.get("s") or 0),
                "bytes": atoms.get("B"), "duration_ms": round(request_time.total_seconds() * 1000, 3),
                "remote_addr": atoms.get("h"), "user_agent": atoms.get("a"),
                "request_id": request_id, "video_id": video_id_of(path, str(atoms.get("{location}o") or "")),
            }
            self.access_log.info("%s %s %s", extra["method"], path, extra["status"], extra=extra)
        except Exception:
            self.error(traceback.format_exc())
