"""The two kinds of failure, because the queue treats them oppositely.

A permanent media error becomes a returned "failed" result (never retried: the same bytes fail the
same way); anything else is raised so RQ retries it with backoff.
"""

from __future__ import annotations


class InvalidMediaError(Exception):
    """The source is not a playable video; the message is meant for a person."""


class TransientTranscodeError(RuntimeError):
    """A failure that may not happen again (FFmpeg killed, disk full, storage hiccup): retry it."""


class TranscodeTimeoutError(TransientTranscodeError):
    """The encode took longer than its duration-derived budget (an overloaded or stuck node)."""


class TranscodeCancelledError(TransientTranscodeError):
    """The job was told to stop (SIGTERM) while FFmpeg was running."""
