"""What kvant's Python test servers share: listening on 127.0.0.1, port
0, with the port published in DIR/port (written atomically) for the test
to read, each request in its own thread; and forwarding a request to an
upstream Ollama."""

import http.client
import http.server
import os


def serve(handler, directory, ssl_context=None):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if ssl_context is not None:
        srv.socket = ssl_context.wrap_socket(srv.socket, server_side=True)
    tmp = os.path.join(directory, "port.tmp")
    with open(tmp, "w") as f:
        f.write(f"{srv.server_address[1]}\n")
    os.replace(tmp, os.path.join(directory, "port"))
    srv.serve_forever()


def read_body(handler):
    """The request body in chunks (Content-Length delimited)."""
    left = int(handler.headers.get("Content-Length") or 0)
    while left > 0:
        chunk = handler.rfile.read(min(left, 1 << 20))
        if not chunk:
            break
        left -= len(chunk)
        yield chunk


def forward(handler, upstream, path):
    """Sends the handler's request to `upstream` (a urlsplit) at `path`
    and relays the answer, streaming both ways; returns (status, request
    body bytes). Every answer body is delimited (length or chunks): rustls
    rightly refuses a body that ends with a TLS close without close_notify."""
    conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=600)
    conn.putrequest(handler.command, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", upstream.netloc)
    for k in ("Content-Type", "Content-Length", "Accept"):
        if handler.headers.get(k) is not None:
            conn.putheader(k, handler.headers[k])
    conn.endheaders()
    sent = 0
    for chunk in read_body(handler):
        conn.send(chunk)
        sent += len(chunk)
    resp = conn.getresponse()
    handler.send_response(resp.status)
    sized = resp.getheader("Content-Length") is not None
    for k, v in resp.getheaders():
        if k.lower() not in ("transfer-encoding", "connection"):
            handler.send_header(k, v)
    if not sized:
        handler.send_header("Transfer-Encoding", "chunked")
    handler.send_header("Connection", "close")
    handler.end_headers()
    if handler.command != "HEAD":
        while True:
            chunk = resp.read1(1 << 16)
            if not chunk:
                break
            handler.wfile.write(chunk if sized else b"%x\r\n%s\r\n" % (len(chunk), chunk))
            handler.wfile.flush()
        if not sized:
            handler.wfile.write(b"0\r\n\r\n")
    conn.close()
    handler.close_connection = True
    return resp.status, sent
