"""A tiny echo server: answers every request with what it received, as JSON.

Listens on 127.0.0.1 at the port given as its first argument (or $PORT).
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, each answer on a kept-alive connection
    # waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode(errors="replace") if length else ""
        data = json.dumps(
            {"method": self.command, "path": self.path, "body": body, "app": os.environ.get("R1OS_APP")}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format, *args):  # one line per request in the app's log
        print(self.address_string(), self.command, self.path, flush=True)


port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ["PORT"])
ThreadingHTTPServer(("127.0.0.1", port), Echo).serve_forever()
