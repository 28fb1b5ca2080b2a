"""The live loop as an application: validated device settings -> a running pipeline.

`build_pipeline` is the one place that turns a `DeviceSettings` (device.yaml merged with the command
line, see edgedepth.config) into its parts: backend, source, sinks, selector, spool collector, stats,
metrics endpoint and registry watcher. Everything that can fail on bad input fails there, before the
loop starts. `Pipeline.run` runs the loop until the source ends or SIGINT/SIGTERM, then closes every part.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List

from edgedepth.config import DeviceSettings
from edgedepth.durations import parse_duration
from edgedepth.errors import ConfigError

log = logging.getLogger("edgedepth.run")
Echo = Callable[[str], None]


def default_device_id() -> str:
    """The host name, cleaned to the characters a device id may hold."""
    name = socket.gethostname() or "device"
    return "".join(c if c.isalnum() or c in "_.:-" else "-" for c in name)[:128]


@dataclass
class Pipeline:
    """The parts of one live loop; `run` owns them from then on and closes them all."""

    settings: DeviceSettings
    backend: Any
    source: Any
    loop: Any
    stats: Any
    reporter: Any
    outputs: List[str]
    echo: Echo
    collector: Any = None
    metrics: Any = None
    watcher: Any = None
    _closers: List[Callable[[], None]] = field(default_factory=list)

    def run(self):
        """Run until the source ends, --max-frames, a quit key or a signal; return the loop's summary."""
        run = self.settings.run
        if self.watcher is not None:
            self.watcher.start()
        previous = install_signal_handlers(self.loop, self.echo)
        spool = f", spool {self.settings.spool}" if self.collector is not None else ""
        self.echo(f"running {run.input} -> {', '.join(self.outputs) or 'no display'}{spool} (Ctrl-C to stop)")
        try:
            summary = self.loop.run()
        finally:
            if self.watcher is not None:
                self.watcher.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        if self.collector is not None:
            self.echo(f"spool: {self.collector.written} item(s) written, {self.collector.dropped} dropped, "
                      f"{self.stats.counters.get('spool_evicted', 0)} evicted")
        if self.source.error and not summary.frames:
            raise ConfigError(f"source {run.input} failed: {self.source.error}")
        self.echo(f"stopped: {summary.reason}; {summary.frames} frames, {summary.errors} errors")
        return summary

    def close(self) -> None:
        """Close every part that was opened (also when building failed half-way)."""
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception as exc:  # one part failing to close must not keep the others open
                log.warning("closing %s failed: %s", getattr(closer, "__self__", closer), exc)
        self._closers.clear()


def check_settings(settings: DeviceSettings) -> None:
    """What the schema cannot see: combinations of keys and the source URI's syntax."""
    run = settings.run
    if not run.model:
        raise ConfigError("no model: give MODEL (a bundle, .onnx or .engine) or run.model in --config")
    if run.registry and not run.public_key:
        raise ConfigError("--registry needs --public-key (the signing.pub of the publisher)")
    from edgedepth.runtime.sources import make_raw_source

    make_raw_source(run.input)  # parses the URI (sizes, parameters, paths); opens nothing


def build_pipeline(settings: DeviceSettings, echo: Echo = log.info) -> Pipeline:
    """Every part of the live loop from validated settings; nothing runs yet."""
    check_settings(settings)
    run = settings.run
    closers: List[Callable[[], None]] = []
    try:
        return _build(settings, run, echo, closers)
    except BaseException:
        for closer in reversed(closers):
            try:
                closer()
            except Exception:  # the build error is the one to report
                pass
        raise


def _build(settings: DeviceSettings, run, echo: Echo, closers: List[Callable[[], None]]) -> Pipeline:
    from edgedepth.runtime.backend_choice import load_for_run
    from edgedepth.runtime.capture import open_source
    from edgedepth.runtime.loop import DepthLoop
    from edgedepth.runtime.postprocess import Postprocessor
    from edgedepth.runtime.sinks import DepthPngSink, PointCloudSink, Visualizer, make_sink, opencv_has_gui
    from edgedepth.runtime.stats import LoopStats, MetricsServer, StatsReporter

    device = None
    if settings.board:
        from edgedepth.devices import load_device

        device = load_device(settings.board)
    threads = run.threads
    if threads is None:
        from edgedepth.runtime.backends.onnxruntime import pipeline_threads

        threads = pipeline_threads()

    be = load_for_run(run.model, backend=run.backend, device=device, threads=threads)
    closers.append(be.close)
    echo(f"backend: {be.describe()} - {be.reason or 'requested'}")
    if be.info.input.is_uint8:
        spec = be.info.input
        echo(f"the model takes the camera's bytes: uint8 {spec.height}x{spec.width} "
             f"{'BGR' if spec.bgr else 'RGB'}, resized and normalised inside its graph")
    pre = be.info.preprocessing
    relative = be.info.depth_units == "relative"
    if relative and run.save_pointcloud:
        raise ConfigError(f"{run.model} is a relative-depth model (trained on relative labels, no metric "
                          "scale): it cannot give point clouds in metres; drop --save-pointcloud or use a "
                          "metric model")
    echo(f"model input {pre.height}x{pre.width}; depth output is "
         + ("RELATIVE (no metric scale; the model was trained on relative labels)" if relative else
            f"metric, in metres (range {pre.min_depth:g}-{pre.max_depth:g} m)"))
    be.warmup(2)
    post = Postprocessor(run.confidence_threshold, run.min_confident_fraction)
    fixed_k = None
    if run.intrinsics:
        from edgedepth.runtime.pointcloud import load_intrinsics

        fixed_k = load_intrinsics(run.intrinsics)

    loop_ref: Dict[str, Any] = {}
    uris = list(run.outputs)
    if not uris and not run.headless:
        if opencv_has_gui():
            uris = ["display://0"]
        else:
            echo("note: OpenCV has no GUI here, running headless (add --headless to silence this)")
    if run.headless:
        uris = [u for u in uris if not u.startswith("display://")]
    sinks = [make_sink(uri, on_quit=lambda: loop_ref["loop"].stop("quit key"), intrinsics=fixed_k,
                       device=device) for uri in uris]
    if run.save_depth:
        sinks.append(DepthPngSink(run.save_depth))
    if run.save_pointcloud:
        sinks.append(PointCloudSink(run.save_pointcloud, intrinsics=fixed_k, device=device,
                                    every=run.pointcloud_every))
    from edgedepth.colorbar import depth_units

    wants_view = any(s.wants_view for s in sinks)
    visualizer = Visualizer(run.colormap, units=depth_units(be.info)) if wants_view else None

    stats = LoopStats()
    selector = _selector(settings, pre, be, echo)
    collector = None
    if settings.spool:
        from edgedepth.runtime.collect import SpoolCollector
        from edgedepth.spool import Spool, cap_bytes

        max_bytes = cap_bytes(settings.spool_max_mb)  # MiB, as upload
        collector = SpoolCollector(
            Spool(settings.spool, max_bytes=max_bytes), device_id=settings.device_id or default_device_id(),
            source_uri=run.input, info=be.info, model_sha256=be.model_sha256, neighbors=run.neighbors,
            jpeg_quality=run.jpeg_quality, selection_mode=run.select.mode, count=stats.count,
        )
        closers.append(collector.close)

    source = open_source(run.input, device=device, default_size=(pre.height, pre.width), loop=run.loop)
    closers.append(source.close)
    stats.source_stats = source.stats
    reporter = StatsReporter(stats, interval=run.stats_interval, jsonl=run.stats_jsonl, echo=echo)
    closers.append(reporter.close)
    server = None
    if run.metrics_port is not None:
        server = MetricsServer(stats, run.metrics_port, host=run.metrics_host)
        closers.append(server.close)
        echo(f"metrics: http://{server.host}:{server.port}/metrics")
    loop = DepthLoop(source, be, sinks=sinks, visualizer=visualizer, selector=selector, collector=collector,
                     stats=stats, reporter=reporter, postprocessor=post, max_frames=run.max_frames,
                     evaluate=run.evaluate)
    loop_ref["loop"] = loop
    watcher = _watcher(settings, loop, device, threads, echo) if run.registry else None
    return Pipeline(settings=settings, backend=be, source=source, loop=loop, stats=stats, reporter=reporter,
                    outputs=uris, echo=echo, collector=collector, metrics=server, watcher=watcher,
                    _closers=list(closers))


def _selector(settings: DeviceSettings, pre, backend, echo: Echo):
    """The frame selector, or None when nothing is spooled and selection is off."""
    sel = settings.run.select
    if not settings.spool and sel.mode == "none":
        return None
    from edgedepth.runtime.reference import bundle_of, load_reference
    from edgedepth.runtime.selection import FrameSelector, SelectionConfig

    ref = load_reference(bundle_of(getattr(backend, "model_path", "")))
    echo("selection: novelty against the bundle's training reference" if ref is not None else
         "selection: no training reference in the bundle; scoring by uncertainty and flicker only")
    return FrameSelector(
        SelectionConfig(mode=sel.mode, rate=sel.rate, max_per_hour=sel.max_per_hour,
                        min_spacing_frames=sel.min_spacing_frames,
                        min_spacing_seconds=sel.min_spacing_seconds, spend_budget=sel.spend_budget,
                        trust_novelty=sel.trust_novelty,
                        min_depth=pre.min_depth, max_depth=pre.max_depth),
        reference=ref,
    )


def _watcher(settings: DeviceSettings, loop, device, threads: int, echo: Echo):
    """Polls the registry for newer promoted versions and swaps them into the loop (not started yet)."""
    from edgedepth.registry.updater import ModelUpdater, installed_version
    from edgedepth.runtime.backend_choice import load_for_run
    from edgedepth.runtime.updates import RegistryWatcher

    run = settings.run
    poll_every_s = parse_duration(run.update_every)
    cache = Path(run.model_cache) if run.model_cache else Path.home() / ".cache" / "edgedepth" / "models"
    current = installed_version(run.model) if Path(run.model).is_dir() else None
    updater = ModelUpdater(run.registry, run.public_key, cache, current_version=current,
                           poll_every_s=poll_every_s)
    watcher = RegistryWatcher(
        loop, updater, lambda path: load_for_run(path, backend=run.backend, device=device, threads=threads),
        echo=echo,
    )
    echo(f"updates: polling {run.registry} every {poll_every_s:g} s (running version {current or 'unknown'})")
    return watcher


def install_signal_handlers(loop, echo: Echo) -> dict:
    """First SIGINT/SIGTERM: finish the current frame, flush, exit 0. A second one: exit at once."""
    previous = {}

    def handler(signum, _frame):
        if loop._stop.is_set():
            echo("second signal: exiting now")
            os._exit(130)
        echo(f"{signal.Signals(signum).name}: finishing the current frame and flushing the spool")
        loop.stop(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous
