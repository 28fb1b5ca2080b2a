"""A scripted stand-in for the ingest server, for daemon tests that need answers on demand.

Run as `python stub_server.py --port N --store DIR [--mode normal|reject|busy|unavailable|auth]
[--token T]`. It speaks the wire protocol (POST/HEAD /v1/items/{id}, /healthz) and checks the body
hash, the tar members and every file hash like the real server, storing items as DIR/<id>/<files>.
`--mode` forces answers: reject -> 415 for every POST, busy -> 429 with Retry-After: 1,
unavailable -> 503, auth -> 401; and 2xx answers that do not confirm the item, storing nothing (as
something else answering on the server's address would): html -> 200 with an HTML page, nocontent ->
204, otherid -> 201 JSON naming another id, notstored -> 201 JSON with "stored": false.
The mode can be changed at run time by writing DIR/.mode.
Used only where the real server (`edgedepth ingest serve`) cannot be told to misbehave.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from edgedepth.spool import parse_meta  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--mode", default="normal")
    ap.add_argument("--token", default="secret")
    args = ap.parse_args()
    store = Path(args.store)
    store.mkdir(parents=True, exist_ok=True)
    mode_file = store / ".mode"
    mode_file.write_text(args.mode)
    counts = {"post": 0, "head": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _send(self, code, doc, extra=None, ctype="application/json"):
            body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _item_id(self):
            parts = self.path.split("/")
            return parts[3] if len(parts) == 4 and parts[1:3] == ["v1", "items"] else None

        def do_GET(self):  # noqa: N802
            if self.path == "/healthz":
                return self._send(200, {"status": "ok"})
            if self.path == "/counts":
                return self._send(200, counts)
            self._send(404, {"error": "not found"})

        def do_HEAD(self):  # noqa: N802
            counts["head"] += 1
            if self.headers.get("Authorization") != f"Bearer {args.token}":
                return self._send(401, {"error": "bad token"})
            item_id = self._item_id()
            self._send(200 if item_id and (store / item_id / "done").exists() else 404, {})

        def do_POST(self):  # noqa: N802
            counts["post"] += 1
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            mode = mode_file.read_text().strip()
            if self.headers.get("Authorization") != f"Bearer {args.token}" or mode == "auth":
                return self._send(401, {"error": "unknown or revoked token"})
            if mode == "busy":
                return self._send(429, {"error": "rate limited"}, {"Retry-After": "1"})
            if mode == "unavailable":
                return self._send(503, {"error": "store down"})
            if mode == "reject":
                return self._send(415, {"error": "not an image"})
            item_id = self._item_id()
            if mode == "html":
                return self._send(200, b"<html><body>Please log in.</body></html>", ctype="text/html")
            if mode == "nocontent":
                self.send_response(204)
                self.end_headers()
                return None
            if mode == "otherid":
                return self._send(201, {"id": "0" * 64, "stored": True, "duplicate": False})
            if mode == "notstored":
                return self._send(201, {"id": item_id, "stored": False, "duplicate": False})
            if hashlib.sha256(body).hexdigest() != self.headers.get("X-Edgedepth-Body-Sha256"):
                return self._send(422, {"error": "body hash mismatch"})
            try:
                with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tf:
                    files = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
                meta = parse_meta(files[f"{item_id}.json"])
            except Exception as exc:  # noqa: BLE001 - a test stub answers 400 for anything malformed
                return self._send(400, {"error": str(exc)})
            for name, entry in meta.files.items():
                data = files.get(f"{item_id}.{name}")
                if data is None or hashlib.sha256(data).hexdigest() != entry.sha256:
                    return self._send(422, {"error": f"file {name} hash mismatch"})
            d = store / item_id
            if (d / "done").exists():
                return self._send(200, {"id": item_id, "stored": True, "duplicate": True})
            d.mkdir(exist_ok=True)
            for name, data in files.items():
                (d / name).write_bytes(data)
            (d / "done").write_text("1")
            self._send(201, {"id": item_id, "stored": True, "duplicate": False})

        def log_message(self, fmt, *a):
            return

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"stub listening on {args.port} pid {os.getpid()}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
