"""A small forward HTTP proxy for kvant's tests: the corporate proxy a
user's HTTP_PROXY/HTTPS_PROXY names.

It forwards absolute-form requests (`GET http://host:port/path`) and
tunnels `CONNECT host:port` (https), connecting every target host at
--resolve-to (so a test can use a name no resolver knows, and only a
request that really went through the proxy can reach the server). With
--auth USER:PASS it answers 407 unless `Proxy-Authorization: Basic` holds
them. Each request is appended to DIR/requests.jsonl as
{"method", "target", "auth_ok"} (never the credentials themselves).

    python3 forward_proxy.py --dir DIR [--auth U:P] [--resolve-to 127.0.0.1]
writes DIR/port once listening.
"""

import argparse
import base64
import http.server
import json
import os
import select
import socket
import sys
import threading
import urllib.parse

from serve_local import serve


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--auth")
    ap.add_argument("--resolve-to", default="127.0.0.1")
    args = ap.parse_args()
    want = None
    if args.auth:
        want = "Basic " + base64.b64encode(args.auth.encode()).decode()
    log_lock = threading.Lock()

    def record(method, target, auth_ok):
        with log_lock, open(os.path.join(args.dir, "requests.jsonl"), "a") as f:
            f.write(json.dumps({"method": method, "target": target, "auth_ok": auth_ok}) + "\n")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            sys.stderr.write("forward proxy: " + (fmt % a) + "\n")

        def authorized(self):
            ok = want is None or self.headers.get("Proxy-Authorization") == want
            record(self.command, self.path, ok)
            if not ok:
                body = b"proxy authentication required"
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="kvant-test"')
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
            return ok

        def do_CONNECT(self):
            if not self.authorized():
                return
            _, _, port = self.path.rpartition(":")
            upstream = socket.create_connection((args.resolve_to, int(port)), timeout=600)
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            client = self.connection
            socks = [client, upstream]
            while True:
                readable, _, _ = select.select(socks, [], [], 600)
                if not readable:
                    break
                done = False
                for s in readable:
                    data = s.recv(1 << 16)
                    if not data:
                        done = True
                        break
                    (upstream if s is client else client).sendall(data)
                if done:
                    break
            upstream.close()
            self.close_connection = True

        def forward(self):
            if not self.authorized():
                return
            url = urllib.parse.urlsplit(self.path)
            if not url.scheme:
                self.send_error(400, "not a proxy request")
                return
            port = url.port or 80
            path = url.path + ("?" + url.query if url.query else "")
            upstream = socket.create_connection((args.resolve_to, port), timeout=600)
            head = [f"{self.command} {path} HTTP/1.1", f"Host: {url.netloc}"]
            for k, v in self.headers.items():
                if k.lower() not in ("host", "proxy-authorization", "proxy-connection", "connection"):
                    head.append(f"{k}: {v}")
            head.append("Connection: close")
            upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                upstream.sendall(chunk)
                left -= len(chunk)
            # The answer is relayed byte for byte until the server closes
            # (it was asked to); its head says `Connection: close` so the
            # client never reuses a connection this proxy then closes.
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = upstream.recv(1 << 16)
                if not data:
                    break
                buf += data
            head, sep, rest = buf.partition(b"\r\n\r\n")
            lines = [l for l in head.split(b"\r\n") if not l.lower().startswith(b"connection:")]
            lines.append(b"Connection: close")
            self.wfile.write(b"\r\n".join(lines) + sep + rest)
            while True:
                data = upstream.recv(1 << 16)
                if not data:
                    break
                self.wfile.write(data)
            self.wfile.flush()
            upstream.close()
            self.close_connection = True

        do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = forward

    serve(Handler, args.dir)


if __name__ == "__main__":
    main()
