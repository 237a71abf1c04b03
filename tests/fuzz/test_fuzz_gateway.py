"""Fuzz what stands around the protocol: ``POST /api/uploads`` (browser tokens), the web app
(``/`` and ``/app/...``), and requests at random paths with random request lines, versions and
raw garbage (TLS and HTTP/2 prefaces, bare LFs, NULs, huge lines), against a real ingest.

None of these may change state; the web app serves nothing but its own built files.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from urllib.parse import unquote

from fuzz_http import Request
from fuzz_strategies import (
    BODIES,
    EXTRA_HEADERS,
    FRAMINGS,
    GARBAGE,
    HEADER_NAMES,
    LATIN1,
    METHODS,
    PATH_TAILS,
    VISIBLE,
    Case,
    header_choice,
    mutated,
    with_extras,
)
from fuzz_support import fuzz_settings
from fuzz_world import World
from hypothesis import example, given
from hypothesis import strategies as st

from vidup_ingest.webapp import routes as webapp_routes


def _values(world: World) -> dict[str, str]:
    return {"key:acme": world.key("acme"), "key:globex": world.key("globex"), "token:upload": world.upload_token,
            "token:read": world.read_token, "done": world.done.id, "playback:done": world.done.hls_token}


# -- POST /api/uploads -------------------------------------------------------------------------

JSON_BODIES = st.one_of(
    st.sampled_from([
        b"", b"{}", b'{"scope": ["upload"]}', b'{"scope": ["upload", "read"]}', b'{"scope": ["read"]}',
        b'{"scope": []}', b'{"scope": "upload"}', b'{"scope": ["admin"]}', b'{"scope": [1]}', b'{"scope": null}',
        b"[]", b"null", b"1", b'"x"', b"{", b'{"scope": ["upload"]', b"\xff\xfe{}", b'{"scope": ["up\\u0000load"]}',
        b'{"a": ' * 2000 + b"1" + b"}" * 2000, b'{"scope": [' + b'"upload",' * 500 + b'"read"]}',
        b'{"scope": ["upload"], "scope": ["read"]}', b'{"x": 1e999}', b"NaN", b'{"scope": ["\xc3\xa9"]}',
    ]),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                 max_leaves=8).map(lambda v: json.dumps({"scope": v}).encode()),
    BODIES,
)


TOKEN_TARGETS = st.one_of(st.sampled_from(["/api/uploads", "/api/uploads", "/api/uploads/", "/api/uploads?x=1",
                                           "/api/", "/api", "/API/uploads", "/api/uploads/..", "/api/%75ploads"]),
                          PATH_TAILS.map(lambda t: "/api/" + t))
TOKEN_ALTERNATIVES: dict[str, st.SearchStrategy[str]] = {
    "Authorization": st.sampled_from(["Bearer @key:globex@", "Bearer @token:upload@", "Bearer @token:read@",
                                      "Bearer @playback:done@", "Bearer", "Basic YTpi", "bearer @key:acme@"]),
    "Content-Type": st.sampled_from(["application/json; charset=latin-1", "text/plain", "multipart/form-data",
                                     "application/x-www-form-urlencoded", "application/json; charset=utf-16", ""]),
    "Content-Encoding": st.sampled_from(["gzip", "deflate", "identity"]),
    "Expect": st.sampled_from(["100-continue"]),
    "Origin": st.sampled_from(["https://app.example", "null"]),
    "X-HTTP-Method-Override": st.sampled_from(["GET", "HEAD", "PUT", "DELETE"]),
}


@st.composite
def valid_token_request(draw: st.DrawFn) -> Case:
    body = draw(st.sampled_from([b"", b"{}", b'{"scope": ["upload"]}', b'{"scope": ["upload", "read"]}',
                                 b'{"scope": ["read"]}']))
    headers = [("Authorization", draw(st.sampled_from(["Bearer @key:acme@", "Bearer @key:globex@"])))]
    if body:
        headers.append(("Content-Type", "application/json"))
    return Case("POST", "/api/uploads", headers, body)


@st.composite
def wild_token_cases(draw: st.DrawFn) -> Case:
    method = draw(st.one_of(st.just("POST"), st.just("POST"), st.just("POST"), METHODS))
    target = draw(TOKEN_TARGETS)
    headers = [
        ("Authorization", draw(header_choice("Bearer @key:acme@", "Bearer @key:acme@", "Bearer @key:acme@",
                                             "Bearer @key:globex@", "Bearer @token:upload@", "Bearer @token:read@",
                                             "Bearer @playback:done@", "Bearer", "Basic YTpi"))),
        ("Content-Type", draw(header_choice("application/json", "application/json", "application/json; charset=latin-1",
                                            "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                            "application/json; charset=utf-16"))),
        ("Origin", draw(header_choice("https://app.example", absent=5))),
        ("Access-Control-Request-Method", draw(header_choice("POST", absent=5))),
        ("Content-Encoding", draw(header_choice("gzip", "deflate", absent=6))),
        ("Expect", draw(header_choice("100-continue", absent=8))),
    ]
    return Case(method, target, with_extras(headers, draw(EXTRA_HEADERS)), draw(JSON_BODIES), draw(FRAMINGS))


@fuzz_settings(examples=250)
@given(case=st.one_of(mutated(valid_token_request(), TOKEN_ALTERNATIVES, TOKEN_TARGETS, bodies=JSON_BODIES),
                      mutated(valid_token_request(), TOKEN_ALTERNATIVES, TOKEN_TARGETS, bodies=JSON_BODIES),
                      wild_token_cases()))
# A declared body that never came held the request (and its thread) for as long as the client liked.
@example(case=Case("POST", "/api/uploads", [("Authorization", "Bearer @key:acme@"),
                                            ("Content-Type", "application/json")], b"{}", "short-stall"))
# JSON nested deeper than the decoder's recursion limit: RecursionError, a 500.
@example(case=Case("POST", "/api/uploads", [("Authorization", "Bearer @key:acme@"),
                                            ("Content-Type", "application/json")],
                   b'{"a": ' * 2000 + b"1" + b"}" * 2000))
def test_fuzz_api_uploads(world: World, case: Case) -> None:
    req = case.resolve(_values(world)).request()
    reply = world.fuzzer.run("POST /api/uploads", req)
    if req.then == "stall":
        assert reply.elapsed < 6, f"a stalled body held the request {reply.elapsed:.1f} s"
    if reply.status == 200 and case.effective_method == "POST" and case.method != "HEAD" \
            and case.target.startswith("/api/uploads"):
        doc = json.loads(reply.body)
        assert doc["token"].startswith("vut1.") and set(doc["scope"]) <= {"upload", "read"}, doc
        auth = [v for k, v in case.headers if k.lower() == "authorization"]
        assert len(auth) == 1 and "@key:" in auth[0] and "@token:" not in auth[0], \
            f"a token was minted without an API key: {auth} -> {reply.summary()}"


# -- the web app -------------------------------------------------------------------------------

STATIC_DIR = webapp_routes.STATIC_DIR
STATIC_NAMES = sorted(str(p.relative_to(STATIC_DIR)) for p in STATIC_DIR.rglob("*") if p.is_file()) \
    if STATIC_DIR.is_dir() else []


@st.composite
def valid_webapp_request(draw: st.DrawFn) -> Case:
    target = draw(st.one_of(st.just("/"), st.sampled_from([f"/app/{n}" for n in STATIC_NAMES if n != "index.html"]
                                                         or ["/"])))
    headers = [("Range", draw(st.sampled_from(["bytes=0-10", "bytes=-5"])))] if draw(st.integers(0, 3)) == 0 else []
    return Case(draw(st.sampled_from(["GET", "GET", "HEAD"])), target, headers)


WEBAPP_ALTERNATIVES: dict[str, st.SearchStrategy[str]] = {
    "Range": st.sampled_from(["bytes=0-10", "bytes=-5", "bytes=99999999-", "bytes=5-1", "bytes=abc"]),
    "If-None-Match": st.sampled_from(["*", "\"x\""]),
    "If-Modified-Since": st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT", "garbage"]),
    "Accept-Encoding": st.sampled_from(["gzip", "br", "*"]),
    "X-HTTP-Method-Override": st.sampled_from(["HEAD", "POST", "OPTIONS"]),
}


@st.composite
def webapp_target(draw: st.DrawFn) -> str:
    tail = draw(st.one_of(
        st.sampled_from(STATIC_NAMES or ["index.html"]),
        st.sampled_from(["index.html", "../routes.py", "..%2froutes.py", "%2e%2e/%2e%2e/app.py", "../../app.py",
                         "..\\routes.py", "/etc/passwd", "%00", "x%00.js", "a" * 300, ".", "..", "", "static",
                         "../static/index.html", "%2e%2e%2f%2e%2e%2f__init__.py", "....//....//app.py"]),
        PATH_TAILS,
    ))
    return draw(st.one_of(st.just("/"), st.just("/app/" + tail), st.just("/app/" + tail),
                          st.sampled_from(["/index.html", "/app", "/app/", "//", "/?x=1", "/./", "/%2e/"])))


@st.composite
def wild_webapp_cases(draw: st.DrawFn) -> Case:
    target = draw(webapp_target())
    headers = [
        ("Range", draw(header_choice("bytes=0-10", "bytes=-5", "bytes=99999999-", "bytes=5-1", "bytes=abc",
                                     absent=4))),
        ("If-None-Match", draw(header_choice("*", "\"x\"", absent=5))),
        ("If-Modified-Since", draw(header_choice("Wed, 21 Oct 2015 07:28:00 GMT", "garbage", absent=5))),
        ("Accept-Encoding", draw(header_choice("gzip", "br", "*", absent=5))),
        ("Authorization", draw(header_choice("Bearer @key:acme@", absent=5))),
    ]
    method = draw(st.one_of(st.sampled_from(["GET", "GET", "GET", "HEAD"]), METHODS))
    return Case(method, target, with_extras(headers, draw(EXTRA_HEADERS)), b"", draw(FRAMINGS))



@fuzz_settings(examples=250)
@given(case=st.one_of(mutated(valid_webapp_request(), WEBAPP_ALTERNATIVES, webapp_target()),
                      mutated(valid_webapp_request(), WEBAPP_ALTERNATIVES, webapp_target()), wild_webapp_cases()))
@example(case=Case("GET", "//", []))  # an empty authority, then "/": the page
def test_fuzz_webapp(world: World, case: Case) -> None:
    resolved = case.resolve(_values(world))
    reply = world.fuzzer.run("GET / and /app/...", resolved.request())
    if reply.status in (200, 206) and case.effective_method == "GET":
        path = unquote(resolved.target.split("?", 1)[0])
        files = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_NAMES}
        if path.startswith("/app/"):
            name = posixpath.normpath(path.removeprefix("/app/"))
            assert name in files, f"the web app served something that is not its own file: {path}"
            assert reply.body in files[name], reply.summary()
        else:  # the page ("//" reaches it too: an empty authority, then the path "/")
            assert reply.body in files.get("index.html", b"-"), reply.summary()
        if reply.status == 200:
            assert hashlib.sha256(reply.body).hexdigest() in world.static, reply.summary()


# -- anything at all ---------------------------------------------------------------------------

PREFIXES = st.sampled_from(["/", "/files/", "/videos/", "/api/", "/app/", "/healthz", "", "/videos/@done@/",
                            "/videos/@done@/hls/@playback:done@/", "/files/../videos/", "http://h/", "*"])
VERSIONS = st.one_of(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0",
                                      "HTTP/9.9", "HTTP/1.1 x", "", "http/1.1", "HTTP/1.10", "HTTP/1"]),
                     st.text(VISIBLE, max_size=10))
RAW_GARBAGE = st.sampled_from([
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # a TLS ClientHello
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(9),  # the HTTP/2 preface
    b"\n\n", b"\r\n\r\n", b"GET / HTTP/1.1\n\n", b"GET / HTTP/1.1\nHost: x\n\n", b"GET /\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n  folded\r\n\r\n", b"\x00\x00\x00\x00", b"GET \x00 HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n", b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /files/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"GET / HTTP/1.1\r\n:\r\n\r\n", b"GET / HTTP/1.1\r\nA\r\n\r\n",
    b" GET / HTTP/1.1\r\n\r\n", b"GET  / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n"
    b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
])


@st.composite
def raw_cases(draw: st.DrawFn) -> Case:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        data = draw(st.one_of(RAW_GARBAGE, st.binary(min_size=1, max_size=200)))
        return Case("RAW", "", [], b"", "none", then="half-close", raw=data)
    target = draw(PREFIXES) + draw(st.one_of(PATH_TAILS, st.text(LATIN1, max_size=12)))
    headers = with_extras([("Authorization", draw(header_choice("Bearer @key:acme@", absent=2)))],
                          draw(st.lists(st.tuples(HEADER_NAMES, GARBAGE), max_size=6)))
    return Case(draw(METHODS), target, headers, draw(BODIES), draw(FRAMINGS), version=draw(VERSIONS))


@fuzz_settings(examples=400)
@given(case=raw_cases())
def test_fuzz_any_request(world: World, case: Case) -> None:
    resolved = case.resolve(_values(world))
    req = resolved.request() if case.raw is None else Request(b"", b"", [], raw=case.raw, then=case.then)
    # Bytes that are no HTTP request (a TLS hello) may get no answer, but the connection must end.
    world.fuzzer.run("any path, raw request lines", req, answer_required=case.raw is None)

