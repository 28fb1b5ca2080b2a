"""Counters of the upload daemon and their Prometheus families, served on the local /metrics endpoint
(edgedepth/metrics_http.py, with /healthz)."""

from __future__ import annotations

from typing import Callable, Dict, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edgedepth.fleet.queue import STATES
from edgedepth.metrics_http import MetricsHTTPServer, registry_of


class Stats:
    """Counters (monotonic since start) and the last job-table gauges."""

    def __init__(self) -> None:
        self.uploaded = 0  # stored by the server (201)
        self.duplicates = 0  # the server already had it (200 naming the item as a duplicate)
        self.bytes_sent = 0
        self.failures = 0  # permanent rejections (moved to failed/)
        self.retries = 0  # transient failures that will be retried
        self.auth_errors = 0  # 401/403, a device id the token does not own included
        self.unconfirmed = 0  # 2xx answers that did not name the item as stored (the data is kept)
        self.gone = 0  # left the spool before upload (evicted or deleted)
        self.evicted = 0  # by this daemon's spool cap
        self.last_success = 0.0
        self.gauges: Dict[str, float] = {}


def families(stats: Stats) -> Iterator[Metric]:
    """The daemon's counters and gauges as Prometheus metric families (read at scrape time)."""
    s, g = stats, dict(stats.gauges)

    def gauge(name: str, help_: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"edgedepth_upload_{name}", help_, value=value)

    def counter(name: str, help_: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(f"edgedepth_upload_{name}", help_, value=value)

    yield gauge("queue_depth", "Items queued or uploading.", g.get("queue_depth", 0))
    jobs = GaugeMetricFamily("edgedepth_upload_jobs", "Job table rows by state.", labels=["state"])
    for state in STATES:
        jobs.add_metric([state], g.get("queue_" + state, 0))
    yield jobs
    yield gauge("oldest_pending_age_seconds", "Age of the oldest pending item.",
                g.get("oldest_pending_age_seconds", 0))
    yield gauge("pending_bytes", "Bytes waiting to be uploaded.", g.get("pending_bytes", 0))
    yield counter("bytes_sent_total", "Request body bytes sent.", s.bytes_sent)
    yield counter("uploaded_total", "Items stored by the server.", s.uploaded)
    yield counter("duplicates_total", "Items the server already had.", s.duplicates)
    yield counter("failures_total", "Items rejected permanently (moved to failed/).", s.failures)
    yield counter("retries_total", "Transient failures retried.", s.retries)
    yield counter("auth_errors_total", "Uploads refused for the token.", s.auth_errors)
    yield counter("unconfirmed_total", "2xx answers that did not confirm the item (data kept).",
                  s.unconfirmed)
    yield counter("gone_total", "Items that left the spool before upload.", s.gone)
    yield counter("evicted_total", "Items evicted by the spool cap.", s.evicted)
    yield gauge("last_success_timestamp_seconds", "Unix time of the last delivery.", s.last_success)


def serve_upload_metrics(port: int, stats: Callable[[], Stats]) -> MetricsHTTPServer:
    """/metrics and /healthz on 127.0.0.1:`port`; `stats()` is read at every scrape."""
    return MetricsHTTPServer(registry_of(lambda: families(stats())), port)
