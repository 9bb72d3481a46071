"""What kvant's Python test servers share: listen on 127.0.0.1, port 0,
and publish the port in DIR/port (written atomically) for the test to
read, then serve each request in its own thread."""

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
