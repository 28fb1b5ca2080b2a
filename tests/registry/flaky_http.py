"""A static HTTP server for the registry tests that cuts some downloads short, like a dropped link.

    python flaky_http.py PORT DIR SUFFIX N

Serves DIR on 127.0.0.1:PORT. The first N GETs of a path ending in SUFFIX get a 200 response without a
Content-Length header (so the body ends when the connection closes) carrying only the first half of the
file: the client sees a complete-looking but short download. Later GETs are served in full.
"""

from __future__ import annotations

import functools
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class FlakyHandler(SimpleHTTPRequestHandler):
    suffix = ""
    cuts_left = 0
    lock = threading.Lock()

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        with FlakyHandler.lock:
            cut = self.path.endswith(FlakyHandler.suffix) and FlakyHandler.cuts_left > 0
            if cut:
                FlakyHandler.cuts_left -= 1
        if not cut:
            return super().do_GET()
        path = self.translate_path(self.path)
        with open(path, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


def main() -> None:
    port, root, suffix, cuts = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    FlakyHandler.suffix, FlakyHandler.cuts_left = suffix, cuts
    handler = functools.partial(FlakyHandler, directory=root)
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
