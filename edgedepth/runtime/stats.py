"""Loop statistics: fps, capture->result latency percentiles, inference time, drops; printed, written as
JSON lines and served as Prometheus metrics (edgedepth/metrics_http.py, 127.0.0.1 by default)."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edgedepth.metrics_http import MetricsHTTPServer, registry_of, text_of

log = logging.getLogger(__name__)


class Window:
    """The last `size` samples of one quantity, in a preallocated ring."""

    def __init__(self, size: int = 2048):
        self.values = np.zeros(size, dtype=np.float64)
        self.count = 0

    def add(self, value: float) -> None:
        self.values[self.count % len(self.values)] = value
        self.count += 1

    def array(self) -> np.ndarray:
        return self.values[: min(self.count, len(self.values))]

    def percentiles(self, qs=(50, 95, 99)) -> Dict[str, float]:
        arr = self.array()
        if arr.size == 0:
            return {f"p{q}": float("nan") for q in qs}
        vals = np.percentile(arr, qs)
        return {f"p{q}": float(v) for q, v in zip(qs, vals)}

    def mean(self) -> float:
        arr = self.array()
        return float(arr.mean()) if arr.size else float("nan")


COUNTERS = (
    "frames",
    "frame_errors",
    "selected",
    "spool_written",
    "spool_evicted",
    "spool_dropped",
    "unreliable_frames",
    "backend_swaps",
    "rollbacks",
)


class LoopStats:
    """Thread-safe counters and windows; `snapshot()` is what every report prints."""

    def __init__(self, window: int = 2048, source_stats: Optional[Callable[[], Dict[str, float]]] = None):
        self._lock = threading.Lock()
        self.latency_ms = Window(window)
        self.infer_ms = Window(window)
        self.select_ms = Window(window)  # wall time of selection + spool hand-over
        self.select_cpu_ms = Window(window)  # CPU time of the same (what it costs the device)
        self.frame_ms = Window(window)  # time between consecutive results
        self._done_times = Window(256)
        self.counters: Dict[str, int] = {k: 0 for k in COUNTERS}
        self.source_stats = source_stats
        self.started = time.monotonic()
        self.labels: Dict[str, str] = {}
        self.extra: Dict[str, float] = {}
        self._last_done: Optional[float] = None

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def record(self, latency_ms: float, infer_ms: float, select_ms: float, done: float,
               select_cpu_ms: Optional[float] = None) -> None:
        with self._lock:
            self.counters["frames"] += 1
            self.latency_ms.add(latency_ms)
            self.infer_ms.add(infer_ms)
            self.select_ms.add(select_ms)
            self.select_cpu_ms.add(select_ms if select_cpu_ms is None else select_cpu_ms)
            if self._last_done is not None:
                self.frame_ms.add((done - self._last_done) * 1000.0)
            self._last_done = done
            self._done_times.add(done)

    def fps(self) -> float:
        times = self._done_times.array()
        if times.size < 2:
            return 0.0
        span = float(times.max() - times.min())
        return (times.size - 1) / span if span > 0 else 0.0

    def snapshot(self) -> Dict[str, object]:
        with self._lock:
            snap: Dict[str, object] = dict(self.counters)
            snap["uptime_s"] = round(time.monotonic() - self.started, 3)
            snap["fps"] = round(self.fps(), 2)
            for name, win in (("latency_ms", self.latency_ms), ("infer_ms", self.infer_ms)):
                for key, val in win.percentiles().items():
                    snap[f"{name}_{key}"] = round(val, 3)
            snap["select_ms_mean"] = round(self.select_ms.mean(), 4)
            snap["select_cpu_ms_mean"] = round(self.select_cpu_ms.mean(), 4)
            snap["frame_ms_mean"] = round(self.frame_ms.mean(), 3)
            snap.update(self.extra)
            snap.update({f"label_{k}": v for k, v in self.labels.items()})
        if self.source_stats is not None:
            for key, val in self.source_stats().items():
                snap[f"source_{key}"] = val
        snap["depth_units"] = "metres"
        return snap

    def format_line(self, snap: Optional[Dict[str, object]] = None) -> str:
        s = snap or self.snapshot()
        return (
            f"frames {s['frames']}  {s['fps']:.1f} fps  latency p50/p95/p99 {s['latency_ms_p50']:.1f}/"
            f"{s['latency_ms_p95']:.1f}/{s['latency_ms_p99']:.1f} ms  infer p50 {s['infer_ms_p50']:.1f} ms  "
            f"dropped {s.get('source_dropped', 0)}  errors {s['frame_errors']}  selected {s['selected']}  "
            f"(depth in metres)"
        )

    # -- Prometheus (edgedepth/metrics_http.py serves it) --------------------------------------------
    def metric_families(self) -> Iterator[Metric]:
        """The loop's metrics as Prometheus families, read from `snapshot()` at scrape time."""
        s = self.snapshot()
        info = GaugeMetricFamily("edgedepth_info",
                                 "Model and backend of the live loop (depth output in metres).",
                                 labels=sorted(self.labels))
        info.add_metric([str(self.labels[k]) for k in sorted(self.labels)], 1)
        yield info
        counters = {
            "frames": "Frames processed.",
            "frame_errors": "Frames that failed (logged and skipped).",
            "selected": "Frames selected for upload.",
            "spool_written": "Items written to the spool.",
            "spool_evicted": "Spool items evicted (lowest score first) to respect the size cap.",
            "spool_dropped": "Selected frames dropped because the spool writer was busy.",
            "unreliable_frames": "Frames flagged unreliable by the confidence mask.",
            "backend_swaps": "Backend swaps applied.",
            "rollbacks": "Swaps rolled back by the health check.",
        }
        for key, help_text in counters.items():
            yield CounterMetricFamily(f"edgedepth_{key}_total", help_text, value=int(s.get(key, 0)))
        for key, help_text in (
            ("dropped", "Stale camera frames dropped (latest-frame capture)."),
            ("reconnects", "Source reconnections."),
            ("read_errors", "Source read errors."),
        ):
            yield CounterMetricFamily(f"edgedepth_source_{key}_total", help_text,
                                      value=int(s.get("source_" + key, 0)))
        yield GaugeMetricFamily("edgedepth_fps", "Results per second over the last frames.", value=s["fps"])
        for name, help_text in (("latency", "Capture-to-result latency"), ("infer", "Inference time")):
            metric = f"edgedepth_{name}_seconds"
            summary = Metric(metric, f"{help_text} (recent window).", "summary")
            for q in (50, 95, 99):
                summary.add_sample(metric, {"quantile": f"{q / 100:g}"}, float(s[f"{name}_ms_p{q}"]) / 1000.0)
            yield summary
        yield GaugeMetricFamily("edgedepth_uptime_seconds", "Seconds since the loop started.",
                                value=float(s["uptime_s"]))

    def prometheus_text(self) -> str:
        return text_of(registry_of(self.metric_families))


class StatsReporter:
    """Prints a line every `interval` s (through `echo`) and appends a JSON line per report."""

    def __init__(
        self,
        stats: LoopStats,
        interval: float = 5.0,
        jsonl: Optional[str] = None,
        echo: Optional[Callable[[str], None]] = None,
    ):
        self.stats = stats
        self.interval = float(interval)
        self.echo = echo
        self._next = time.monotonic() + self.interval
        self._file = None
        if jsonl:
            Path(jsonl).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(jsonl, "a", buffering=1)

    def maybe_report(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        if self.interval > 0 and now >= self._next:
            self._next = now + self.interval
            self.report()

    def report(self, final: bool = False) -> Dict[str, object]:
        snap = self.stats.snapshot()
        snap["final"] = final
        snap["time"] = time.time()
        if self.echo is not None:
            self.echo(("final: " if final else "") + self.stats.format_line(snap))
        if self._file is not None:
            self._file.write(json.dumps(snap, sort_keys=True, default=str) + "\n")
        return snap

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class MetricsServer(MetricsHTTPServer):
    """GET /metrics (and /) -> the loop's Prometheus metrics; a daemon thread; 127.0.0.1 unless told."""

    def __init__(self, stats: LoopStats, port: int, host: str = "127.0.0.1"):
        super().__init__(registry_of(stats.metric_families), port, host=host, paths=("/metrics", "/"),
                         hint="; pick another --metrics-port")
