"""A tiny HTTP server for the cluster tests, run in pods from vidup's own image: GET answers the
pod's name; POST streams the body, writes the running byte count to /tmp/received as it goes (so
a test can see bytes arrive before the client has finished), and answers the count and SHA-256."""

import hashlib
import http.server
import os
import socket

print(f"echo server starting on {socket.gethostname()}", flush=True)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(socket.gethostname().encode())

    def do_POST(self) -> None:
        left = int(self.headers["Content-Length"])
        digest, received = hashlib.sha256(), 0
        while left:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            received += len(chunk)
            left -= len(chunk)
            with open("/tmp/received.tmp", "w") as progress:
                progress.write(str(received))
            os.replace("/tmp/received.tmp", "/tmp/received")
        self._answer(f"{received} {digest.hexdigest()}".encode())

    def log_message(self, *args: object) -> None:
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
