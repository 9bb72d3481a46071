"""A reverse proxy for kvant's tests that answers with redirects, as an
nginx in front of Ollama does after a move (`/ollama` to `/ollama/`, http
to https, an old address to a new one).

A request whose path starts with FROM (of `--redirect FROM=TO`; FROM may
be empty: every path) is answered with --status and
`Location: TO + the rest of the path` (TO absolute or a path). Any other
request is forwarded to --upstream, with --strip removed from the front
of its path. Each request is appended to DIR/requests.jsonl as
{"method", "path", "status", "authorization", "secret", "body_bytes"}:
whether the `Authorization` and `X-Kvant-Secret` headers came (never
their values) and how many body bytes arrived.

    python3 redirect_front.py --dir DIR --upstream URL
        [--redirect FROM=TO --status 308] [--strip PREFIX]
writes DIR/port once listening.
"""

import argparse
import http.server
import json
import os
import sys
import threading
import urllib.parse

from serve_local import forward, read_body, serve


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--redirect")
    ap.add_argument("--status", type=int, default=308)
    ap.add_argument("--strip", default="")
    args = ap.parse_args()
    src, _, dst = (args.redirect or "").partition("=")
    up = urllib.parse.urlsplit(args.upstream)
    log_lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            sys.stderr.write("redirect front: " + (fmt % a) + "\n")

        def record(self, status, body_bytes):
            entry = {
                "method": self.command,
                "path": self.path,
                "status": status,
                "authorization": self.headers.get("Authorization") is not None,
                "secret": self.headers.get("X-Kvant-Secret") is not None,
                "body_bytes": body_bytes,
            }
            with log_lock, open(os.path.join(args.dir, "requests.jsonl"), "a") as f:
                f.write(json.dumps(entry) + "\n")

        def handle_one(self):
            if args.redirect is not None and self.path.startswith(src):
                # The request body is read (and dropped) as a server does
                # before answering, so the connection stays in step.
                n = sum(len(c) for c in read_body(self))
                self.record(args.status, n)
                self.send_response(args.status)
                self.send_header("Location", dst + self.path[len(src):])
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                return
            path = self.path
            if args.strip and path.startswith(args.strip):
                path = path[len(args.strip):] or "/"
            status, n = forward(self, up, path)
            self.record(status, n)

        do_GET = do_POST = do_HEAD = do_DELETE = handle_one

    serve(Handler, args.dir)


if __name__ == "__main__":
    main()
