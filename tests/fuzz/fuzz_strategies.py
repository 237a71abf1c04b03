"""Hypothesis strategies for whole HTTP requests: methods, targets, headers and body framings.

Values may hold placeholders (``@name@``) that a test resolves against the live world just
before sending (upload ids, their offsets, a body's digest, keys and tokens), so a drawn case
stays meaningful however the state moved: ``@open@`` is whatever upload is the "open" target now.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from fuzz_http import Request
from hypothesis import strategies as st

OCTET = "application/offset+octet-stream"

# -- building blocks ---------------------------------------------------------------------------

#: Visible ASCII, what most header garbage is made of.
VISIBLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
#: Any latin-1 character but CR and LF: controls and obs-text too (the server must refuse or cope).
LATIN1 = st.characters(min_codepoint=0x00, max_codepoint=0xFF, blacklist_characters="\r\n")

NUMERIC_GARBAGE = st.sampled_from([
    "", " ", "-1", "+5", "0x10", "1e3", "1.0", "\u0663", "\u00b2", "\u00bd", "9" * 19, "9223372036854775807",
    "9223372036854775808", "9" * 30, " 7 ", "7,7", "07", "0" * 50, "NaN", "\t5", "5 5", "1_000",
])

SPECIAL_TEXT = st.sampled_from([
    "", " ", "\t", ",", ";", "=", "==", "%00", "%", "../../etc/passwd", "\\", "\u00ff\u00fe", "\u00e9t\u00e9",
    "null", "[]", "{}", "\"", "'", "Bearer", "*", "A" * 300, "a,b,c", "1.0.0,1.0.0",
])

GARBAGE = st.one_of(
    st.text(VISIBLE, max_size=40),
    st.text(VISIBLE, max_size=40),
    SPECIAL_TEXT,
    NUMERIC_GARBAGE,
    st.integers(-(2**70), 2**70).map(str),
    st.text(LATIN1, max_size=20),  # may hold control characters: refused by the HTTP parser
    st.just("A" * 9000),  # longer than the server's header field limit
)


def header_choice(*valid: str, absent: int = 1, garbage: int = 1) -> st.SearchStrategy[str | None]:
    """A header value: absent (None), one of ``valid`` (weighted by repetition), or garbage."""
    options: list[st.SearchStrategy[str | None]] = [st.none()] * absent
    options += [st.sampled_from(valid)] * max(1, len(valid) // 2) if valid else []
    options += [GARBAGE] * garbage
    return st.one_of(*options)


TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
HEADER_NAMES = st.one_of(
    st.text(st.sampled_from(TOKEN_CHARS), min_size=1, max_size=20),
    st.sampled_from([
        "Tus-Resumable", "Upload-Offset", "Upload-Length", "Upload-Metadata", "Upload-Concat", "Upload-Checksum",
        "Upload-Defer-Length", "Authorization", "Content-Type", "Content-Length", "Transfer-Encoding", "Host",
        "X-HTTP-Method-Override", "Upgrade", "Connection", "Expect", "Range", "If-None-Match", "If-Range",
        "If-Modified-Since", "Accept", "Accept-Encoding", "Origin", "Cookie", "Sec-WebSocket-Key",
        "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Prefix", "Forwarded",
        "Upload_Offset", "Trailer", "TE", "HTTP2-Settings", "Proxy-Connection", "Keep-Alive",
    ]),
    st.sampled_from(["Bad Name", "", "Name:", "N\u00e4me", "(x)", "a/b"]),  # invalid names: 400
)

EXTRA_HEADERS = st.lists(st.tuples(HEADER_NAMES, GARBAGE), max_size=3)

METHODS = st.one_of(
    st.sampled_from(["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS", "PUT", "TRACE", "CONNECT", "PROPFIND"]),
    st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_"), min_size=1, max_size=12),
    st.sampled_from(["get", "patch", "G ET", "GET\t", "\u00c9T\u00c9", "A" * 100]),  # invalid: 400
)

#: Garbage that can end a path: traversal, encodings, NUL, very long, unicode.
PATH_TAILS = st.one_of(
    st.sampled_from([
        "", "/", "..", "../", "../..", "%2e%2e", "%2e%2e/%2e%2e", "..%2f..%2f", "%2e%2e%2f", "%252e%252e",
        "....//", "..\\..\\", ".", "./", "//", "%00", "x%00y", "%ff", "%", "%zz", "%2f", "%5c", "?", "?a=b&a=c",
        "#frag", ";param", "\u00e9", "%c3%a9", "%C0%AE%C0%AE", "~", "*", "a" * 5000, "a/" * 300, "A" * 255,
        "index.html", "app.py", "../../../../../../etc/passwd", "%2e%2e%2f%2e%2e%2fsecret.m3u8",
    ]),
    st.text(st.sampled_from("abz09./%-_~:@!$&'()*+,;=?#"), max_size=30),
    st.text(VISIBLE, max_size=20),
)


@dataclass
class Case:
    """One request, symbolic until resolved (placeholders ``@name@`` in the target and headers)."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    framing: str = "exact"
    then: str = "wait"
    version: str = "HTTP/1.1"
    raw: bytes | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        """Valid Python (paste into ``@example``), with long runs of one character written short."""
        def r(value: object) -> str:
            if isinstance(value, str | bytes) and len(value) > 40 and len(set(value)) == 1:
                return f"{value[:1]!r} * {len(value)}"
            if isinstance(value, dict):
                return "{" + ", ".join(f"{r(k)}: {r(v)}" for k, v in value.items()) + "}"
            if isinstance(value, list | tuple):
                inner = ", ".join(r(v) for v in value)
                return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
            return repr(value)

        fields = ", ".join(f"{name}={r(getattr(self, name))}" for name in (
            "method", "target", "headers", "body", "framing", "then", "version", "raw", "notes"))
        return f"Case({fields})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # what hypothesis prints
        printer.text(repr(self))

    @property
    def effective_method(self) -> str:
        """The method the app sees (``X-HTTP-Method-Override`` wins)."""
        overrides = [v for k, v in self.headers if k.lower() == "x-http-method-override" and v.strip()]
        return overrides[-1].strip().upper() if overrides else self.method

    def resolve(self, values: dict[str, str]) -> Case:
        def sub(text: str) -> str:
            if "@" not in text:
                return text
            for key, value in values.items():
                text = text.replace(f"@{key}@", value)
            return text

        return Case(sub(self.method), sub(self.target), [(sub(k), sub(v)) for k, v in self.headers], self.body,
                    self.framing, self.then, self.version, self.raw, self.notes)

    def request(self, host: str = "127.0.0.1") -> Request:
        """The wire request: the framing decides Content-Length / Transfer-Encoding and what is sent."""
        headers = [("Host", host)] if not any(k.lower() == "host" for k, _ in self.headers) else []
        headers += self.headers
        body, then = self.body, self.then
        framing, n = self.framing, len(self.body)
        if framing == "exact":
            if n or self.method in ("POST", "PATCH", "PUT"):
                headers.append(("Content-Length", str(n)))
        elif framing == "none":
            body = b""
        elif framing == "short-close":  # declares more than it sends, then shuts its write side
            headers.append(("Content-Length", str(n + 17)))
            then = "half-close"
        elif framing == "short-stall":  # declares more than it sends, then waits
            headers.append(("Content-Length", str(n + 17)))
            then = "stall"
        elif framing == "long":  # sends more than it declares: the rest reads as a next request
            headers.append(("Content-Length", str(n // 2)))
        elif framing == "chunked":
            headers.append(("Transfer-Encoding", "chunked"))
            body = (b"%x\r\n" % n + self.body + b"\r\n" if n else b"") + b"0\r\n\r\n"
        elif framing == "chunked-bad":
            headers.append(("Transfer-Encoding", "chunked"))
            body = b"%x\r\n" % (n + 3) + self.body + b"\r\nzz\r\n"
            then = "half-close"
        elif framing == "chunked-stall":
            headers.append(("Transfer-Encoding", "chunked"))
            body = b"%x\r\n" % (n + 5) + self.body
            then = "stall"
        elif framing == "cl-garbage":
            headers.append(("Content-Length", self.notes.get("cl", "abc")))
            then = "half-close"
        elif framing == "cl-dup":
            headers += [("Content-Length", str(n)), ("Content-Length", str(n + 1))]
            then = "half-close"
        elif framing == "cl-te":
            headers += [("Content-Length", str(n)), ("Transfer-Encoding", "chunked")]
            then = "half-close"
        elif framing == "te-garbage":
            headers.append(("Transfer-Encoding", self.notes.get("te", "gzip")))
            then = "half-close"
        else:
            raise ValueError(framing)
        return Request(wire(self.method), wire(self.target), [(wire(k), wire(v)) for k, v in headers], body,
                       wire(self.version), then=then, raw=self.raw)


FRAMINGS = st.one_of(
    st.just("exact"), st.just("exact"), st.just("exact"), st.just("exact"), st.just("exact"), st.just("exact"),
    st.sampled_from(["none", "short-close", "long", "chunked", "chunked-bad", "cl-garbage", "cl-dup", "cl-te",
                     "te-garbage"]),
)
#: Framings that leave the server waiting for bytes that never come (each costs a read timeout).
STALLS = st.sampled_from(["short-stall", "chunked-stall"])

BODIES = st.one_of(st.just(b""), st.binary(max_size=64), st.binary(min_size=64, max_size=2048),
                   st.just(b"0123456789abcdef" * 4))


@st.composite
def framing_notes(draw: st.DrawFn) -> dict[str, str]:
    return {"cl": draw(st.one_of(NUMERIC_GARBAGE, GARBAGE)),
            "te": draw(st.sampled_from(["gzip", "chunked, gzip", "identity", "gzip, chunked", "chunked, chunked",
                                        "Chunked", " chunked", "chunked\t", "x-custom", ""]))}


def wire(text: str) -> bytes:
    """Text as a client puts it on the wire: one byte per character when it can, else UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def with_extras(headers: list[tuple[str, str | None]], extras: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if v is not None] + extras


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Case], alternatives: dict[str, st.SearchStrategy[str]],
            targets: st.SearchStrategy[str], methods: st.SearchStrategy[str] = METHODS,
            framings: st.SearchStrategy[str] = FRAMINGS, bodies: st.SearchStrategy[bytes] = BODIES,
            most: int = 4) -> Case:
    """A valid request (``base``) with 0 to ``most`` mutations, so cases are accepted often enough to
    reach deep, and refused for one precise reason at a time: each mutation removes a header, sets
    one to a near-valid (``alternatives``) or garbage value, duplicates one, adds random headers, or
    changes the method, the target, the body or its framing."""
    case = draw(base)
    headers = list(case.headers)
    method, target, body, framing = case.method, case.target, case.body, case.framing
    names = list(alternatives)
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2, 2, 3, most][: 8 + (most > 3)]))):
        kind = draw(st.sampled_from(["drop", "set", "set", "set", "dup", "extra", "method", "target", "body",
                                     "framing"]))
        if kind == "drop" and headers:
            del headers[draw(st.integers(0, len(headers) - 1))]
        elif kind in ("set", "dup") and names:
            name = draw(st.sampled_from(names))
            value = draw(GARBAGE if draw(st.integers(0, 3)) == 0 else alternatives[name])
            if kind == "set":
                headers = [(k, v) for k, v in headers if k != name]
            headers.append((name, value))
        elif kind == "extra":
            headers += draw(EXTRA_HEADERS)
        elif kind == "method":
            method = draw(methods)
        elif kind == "target":
            target = draw(targets)
        elif kind == "body":
            body = draw(bodies)
        elif kind == "framing":
            framing = draw(framings)
    return Case(method, target, headers, body, framing, case.then, case.version, case.raw,
                {**case.notes, **draw(framing_notes())})
