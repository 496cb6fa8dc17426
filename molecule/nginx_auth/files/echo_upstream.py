#!/usr/bin/python3
"""A stand-in for an MLflow replica: answers /health and /metrics, echoes what it was sent
(method, path, headers, body size, its own port and the proxy's connection) as JSON, and
keeps HTTP/1.1 connections alive so nginx's upstream keepalive can be observed."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _body_size(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            size = 0
            while True:
                chunk_len = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if chunk_len == 0:
                    self.rfile.readline()
                    return size
                size += len(self.rfile.read(chunk_len))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        remaining = length
        while remaining:
            remaining -= len(self.rfile.read(min(remaining, 65536)))
        return length

    def _answer(self):
        received = self._body_size()
        if self.path == "/health":
            body, ctype = b"OK", "text/plain"
        elif self.path == "/metrics":
            body, ctype = b"# TYPE echo_requests counter\necho_requests 1\n", "text/plain"
        else:
            body = json.dumps({
                "method": self.command,
                "path": self.path,
                "port": PORT,
                "peer": "%s:%d" % self.client_address,
                "received": received,
                "headers": {k: v for k, v in self.headers.items()},
            }).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        # Like MLflow's security middleware; nginx must not send it twice.
        self.send_header("X-Frame-Options", "DENY")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _answer

    def log_message(self, fmt, *args):
        sys.stderr.write("%s\n" % (fmt % args))


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
