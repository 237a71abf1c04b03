"""Request heads read by the event loop: when one is complete, and the answers sent without a thread.

Pure functions over the bytes received so far. The loop hands a connection to a thread once
``head_state`` says the head is in (or is certain to be refused: gunicorn's parser then answers
400 without waiting for more bytes), so no thread ever waits on a client still typing its head.
"""

from __future__ import annotations

from enum import Enum

#: Largest request head read by the loop (request line, headers, blank line). nginx allows 1 KiB +
#: 4 x 8 KiB by default; a tus request head is well under 4 KiB.
MAX_HEAD = 64 * 1024


class Head(Enum):
    INCOMPLETE = "incomplete"
    COMPLETE = "complete"
    TOO_LARGE = "too large"


def head_state(buf: bytes | bytearray) -> Head:
    """Whether ``buf`` (what a connection sent so far) holds a whole request head.

    A head ends at the first empty line. A bare LF counts as an end too: gunicorn refuses it at
    once (RFC 9112 section 2.2), so the thread that gets it does not wait either.
    """
    if buf.find(b"\r\n\r\n") >= 0 or buf.count(b"\n") != buf.count(b"\r\n"):
        return Head.COMPLETE
    if len(buf) > MAX_HEAD:
        return Head.TOO_LARGE
    return Head.INCOMPLETE


def canned_response(status: int, reason: str, extra: str = "") -> bytes:
    """A complete bodyless HTTP/1.1 response that closes the connection."""
    return (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: 0\r\n{extra}\r\n").encode()


#: Sent when a head did not arrive within the header deadline (nginx and Apache answer 408 too).
TIMED_OUT = canned_response(408, "Request Timeout")
#: Sent when a head is larger than ``MAX_HEAD``.
TOO_LARGE = canned_response(431, "Request Header Fields Too Large")
#: Sent to connections over the per-worker cap: tus clients retry 5xx with a delay.
BUSY = canned_response(503, "Service Unavailable", "Retry-After: 1\r\n")
