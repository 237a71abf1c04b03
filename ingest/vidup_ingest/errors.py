"""One exception type for every client-visible failure, so pure code can say *which* 4xx without
knowing about Flask, and the app turns it into a response in one place."""

from __future__ import annotations


class TusError(Exception):
    """A request that must be answered with ``status`` and ``message``; nothing was changed."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"TusError({self.status}, {self.message!r})"
