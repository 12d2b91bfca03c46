"""A loopback JSON-RPC forwarder for tests: accepts any URL path (as a hosted node does, with its API
key in the path) and relays each POST to an anvil, which only serves '/'. Lets tests use URLs that
carry credentials and keys against a real chain."""
from __future__ import annotations

import contextlib
import http.server
import threading
from typing import Iterator

import requests


@contextlib.contextmanager
def forwarding_to(upstream: str) -> Iterator[str]:
    """Yield http://127.0.0.1:PORT of a forwarder to `upstream`; add any path, userinfo or query."""

    class Forward(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's handler naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            resp = requests.post(upstream, data=body, headers={"Content-Type": "application/json"}, timeout=60)
            self.send_response(resp.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(resp.content)))
            self.end_headers()
            self.wfile.write(resp.content)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
