"""The one way edgedepth's device processes expose Prometheus metrics: prometheus_client on a small
threaded HTTP server (GET /metrics; /healthz; anything else 404), fed by a collector that reads the
process's own counters at scrape time."""

from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable, Optional, Sequence
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import Metric
from prometheus_client.exposition import ThreadingWSGIServer

from edgedepth.errors import ConfigError

log = logging.getLogger(__name__)

CollectFn = Callable[[], Iterable[Metric]]


class _Collector:
    def __init__(self, collect: CollectFn):
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def registry_of(collect: CollectFn) -> CollectorRegistry:
    """A private registry holding one collector that yields `collect()`'s metric families."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(collect))
    return registry


def text_of(registry: CollectorRegistry) -> str:
    """The registry in the Prometheus text format 0.0.4."""
    return generate_latest(registry).decode()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        log.debug("metrics: " + format, *args)


class MetricsHTTPServer:
    """Serves `registry` at /metrics (and `paths`, e.g. "/"), {"status": "ok"} at /healthz, from a
    daemon thread; 127.0.0.1 unless told otherwise. `port` 0 picks a free port (see `.port`)."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "127.0.0.1",
                 paths: Sequence[str] = ("/metrics",), hint: str = ""):
        metrics_app = make_wsgi_app(registry)
        served = set(paths)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            if path in served:
                environ["PATH_INFO"] = "/metrics"
                return metrics_app(environ, start_response)
            if path == "/healthz":
                start_response("200 OK", [("Content-Type", "application/json")])
                return [b'{"status":"ok"}']
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error":"not found; try /metrics"}']

        try:
            self._server: Optional[ThreadingWSGIServer] = make_server(
                host, int(port), app, server_class=ThreadingWSGIServer, handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc}{hint}") from exc
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="edgedepth-metrics", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics (health: /healthz)", host, self.port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
