"""Counters of the upload daemon, their Prometheus text, and the local /metrics + /healthz endpoint."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, Optional

from edgedepth.errors import ConfigError
from edgedepth.fleet.queue import STATES

log = logging.getLogger("edgedepth.fleet.daemon")


class Stats:
    """Counters (monotonic since start) and the last job-table gauges."""

    def __init__(self) -> None:
        self.uploaded = 0  # stored by the server (201)
        self.duplicates = 0  # the server already had it (200 or HEAD)
        self.bytes_sent = 0
        self.failures = 0  # permanent rejections (moved to failed/)
        self.retries = 0  # transient failures that will be retried
        self.auth_errors = 0
        self.gone = 0  # left the spool before upload (evicted or deleted)
        self.evicted = 0  # by this daemon's spool cap
        self.last_success = 0.0
        self.gauges: Dict[str, float] = {}


def render(stats: Stats) -> str:
    """Prometheus text exposition of the daemon's counters and gauges."""
    s, g = stats, dict(stats.gauges)
    lines = []

    def metric(name: str, kind: str, help_: str, value: float) -> None:
        lines.append(f"# HELP edgedepth_upload_{name} {help_}")
        lines.append(f"# TYPE edgedepth_upload_{name} {kind}")
        lines.append(f"edgedepth_upload_{name} {value:g}")

    metric("queue_depth", "gauge", "Items queued or uploading.", g.get("queue_depth", 0))
    lines.append("# HELP edgedepth_upload_jobs Job table rows by state.")
    lines.append("# TYPE edgedepth_upload_jobs gauge")
    for state in STATES:
        lines.append(f'edgedepth_upload_jobs{{state="{state}"}} {g.get("queue_" + state, 0):g}')
    metric("oldest_pending_age_seconds", "gauge", "Age of the oldest pending item.",
           g.get("oldest_pending_age_seconds", 0))
    metric("pending_bytes", "gauge", "Bytes waiting to be uploaded.", g.get("pending_bytes", 0))
    metric("bytes_sent_total", "counter", "Request body bytes sent.", s.bytes_sent)
    metric("uploaded_total", "counter", "Items stored by the server.", s.uploaded)
    metric("duplicates_total", "counter", "Items the server already had.", s.duplicates)
    metric("failures_total", "counter", "Items rejected permanently (moved to failed/).", s.failures)
    metric("retries_total", "counter", "Transient failures retried.", s.retries)
    metric("auth_errors_total", "counter", "Uploads refused for the token.", s.auth_errors)
    metric("gone_total", "counter", "Items that left the spool before upload.", s.gone)
    metric("evicted_total", "counter", "Items evicted by the spool cap.", s.evicted)
    metric("last_success_timestamp_seconds", "gauge", "Unix time of the last delivery.", s.last_success)
    return "\n".join(lines) + "\n"


class MetricsServer:
    """/metrics (Prometheus text) and /healthz on 127.0.0.1, served from a background thread."""

    def __init__(self, port: int, text: Callable[[], str]):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path == "/metrics":
                    body, ctype, code = text().encode(), "text/plain; version=0.0.4", 200
                elif self.path == "/healthz":
                    body, ctype, code = b'{"status":"ok"}', "application/json", 200
                else:
                    body, ctype, code = b'{"error":"not found"}', "application/json", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args) -> None:
                return

        try:
            self._srv: Optional[ThreadingHTTPServer] = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on 127.0.0.1:{port}: {exc}") from exc
        self._srv.daemon_threads = True
        self.port = self._srv.server_address[1]
        threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 1.0}, daemon=True,
                         name="metrics").start()
        log.info("metrics on http://127.0.0.1:%d/metrics (health: /healthz)", self.port)

    def close(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None
