"""`edgedepth run`: the live loop on a device (source URI -> backend -> sinks, selection -> spool)."""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path
from typing import Optional, Tuple

import click

from edgedepth.errors import ConfigError

log = logging.getLogger("edgedepth.run")


def _echo(line: str) -> None:
    click.echo(line, err=True)


@click.command("run")
@click.argument("model", type=click.Path(exists=True))
@click.option(
    "--input",
    "--camera",
    "-i",
    "input_uri",
    default="0",
    show_default=True,
    help="Source URI: camera index, v4l2:///dev/video0?width=&height=&fps=&fourcc=, csi://0, "
    "rtsp://..., file://video.mp4 or a path (video, image, image directory), "
    "synthetic://DOMAIN?seed=&fps=&size=HxW&realtime=1 or synthetic://mix?indoor=0.8&night=0.2.",
)
@click.option(
    "--output",
    "-o",
    "outputs",
    multiple=True,
    help="Output URI (repeatable): display://0, out.mp4 / file://out.mp4, out/frame_%05d.png. "
    "Default: display://0 when OpenCV has a GUI, else none.",
)
@click.option("--headless", is_flag=True, help="No display window.")
@click.option(
    "--backend",
    type=click.Choice(["auto", "trt", "ort-cuda", "ort-trt", "ort-cpu"]),
    default="auto",
    show_default=True,
    help="Inference backend; auto picks the best available for the bundle.",
)
@click.option(
    "--device",
    "device_name",
    default=None,
    help="Board config (name from `edgedepth devices` or a YAML path): engine choice, CSI pipeline, "
    "camera intrinsics.",
)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="onnxruntime intra-op threads (default: all cores but one, which the capture/pre/post stages use).",
)
@click.option(
    "--colormap",
    default="inferno",
    show_default=True,
    help="Depth colormap: inferno, magma, plasma, turbo, viridis, parula, jet (each also NAME-inverted).",
)
@click.option("--max-frames", type=int, default=None, help="Stop after N frames.")
@click.option("--loop", "loop_input", is_flag=True, help="Start a file/image source again when it ends.")
@click.option(
    "--save-depth",
    type=click.Path(),
    default=None,
    help="Directory for depth maps: 16-bit PNG in millimetres (0 = invalid).",
)
@click.option(
    "--save-pointcloud",
    type=click.Path(),
    default=None,
    help="Directory for PLY point clouds (metres) from depth and intrinsics.",
)
@click.option(
    "--pointcloud-every", type=int, default=1, show_default=True, help="Write every Nth point cloud."
)
@click.option(
    "--intrinsics",
    type=click.Path(exists=True),
    default=None,
    help="OpenCV calibration YAML/XML or JSON with camera_matrix (overrides source/device intrinsics).",
)
@click.option(
    "--confidence-threshold",
    type=float,
    default=0.25,
    show_default=True,
    help="A pixel is confident when its expected relative depth error exp(u) is at most this.",
)
@click.option(
    "--min-confident-fraction",
    type=float,
    default=0.5,
    show_default=True,
    help="A frame is reliable when at least this fraction of its pixels is confident.",
)
@click.option(
    "--stats-interval",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds between stats lines (0: only the final one).",
)
@click.option(
    "--stats-jsonl", type=click.Path(), default=None, help="Append stats as JSON lines to this file."
)
@click.option(
    "--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port (/metrics)."
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port.")
@click.option(
    "--select",
    "select_mode",
    type=click.Choice(["hard", "random", "none"]),
    default="hard",
    show_default=True,
    help="Frame selection for upload: hard frames, random at the same rate, or none.",
)
@click.option(
    "--select-rate",
    type=float,
    default=0.05,
    show_default=True,
    help="Keep the top fraction of frames by score (adaptive threshold).",
)
@click.option(
    "--select-max-per-hour", type=float, default=None, help="Budget: at most N kept frames per hour."
)
@click.option(
    "--select-min-spacing",
    type=int,
    default=0,
    show_default=True,
    help="Budget: at least N frames between kept frames.",
)
@click.option(
    "--select-min-seconds",
    type=float,
    default=0.0,
    show_default=True,
    help="Budget: at least S seconds between kept frames.",
)
@click.option(
    "--select-spend-budget",
    is_flag=True,
    default=False,
    help="Lower the threshold while the rate budget goes unspent (e.g. when hard frames come in bursts "
    "that the spacing rule thins out), so the budget is used on the next-best frames.",
)
@click.option(
    "--select-trust-novelty",
    type=float,
    default=None,
    help="With a bundle reference set: frames more than this many reference units from the training data "
    "(e.g. 6) are kept at the random rate instead of ranked by their predicted uncertainty, which means "
    "nothing that far out. The fleet simulation uses 6.",
)
@click.option(
    "--spool",
    "spool_dir",
    type=click.Path(),
    default=None,
    help="Spool directory for selected frames (read by `edgedepth upload`).",
)
@click.option(
    "--spool-max-mb", type=float, default=None, help="Spool size cap; lowest-score items are evicted."
)
@click.option(
    "--jpeg-quality",
    type=int,
    default=None,
    help="Store spooled frames as JPEG at this quality (default PNG).",
)
@click.option(
    "--neighbors",
    type=int,
    default=0,
    show_default=True,
    help="Also spool frames t-K and t+K around each selected frame (for self-supervision).",
)
@click.option("--device-id", default=None, help="Device id in spool metadata (default: the host name).")
@click.option(
    "--registry",
    default=None,
    help="Model registry (DIR, file://, http(s)://, s3://) to poll for newer promoted, signed versions.",
)
@click.option(
    "--update-every",
    default="10m",
    show_default=True,
    help="How often to poll --registry (e.g. 30s, 10m, 1h).",
)
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Ed25519 public key (signing.pub) that registry bundles must be signed with.",
)
@click.option(
    "--model-cache",
    type=click.Path(file_okay=False),
    default=None,
    help="Where verified updates are kept (default: ~/.cache/edgedepth/models).",
)
@click.option(
    "--evaluate",
    is_flag=True,
    help="Compute AbsRel etc. against the source's ground truth (synthetic sources) and report it.",
)
def run(
    model: str,
    input_uri: str,
    outputs: Tuple[str, ...],
    headless: bool,
    backend: str,
    device_name: Optional[str],
    threads: Optional[int],
    colormap: str,
    max_frames: Optional[int],
    loop_input: bool,
    save_depth: Optional[str],
    save_pointcloud: Optional[str],
    pointcloud_every: int,
    intrinsics: Optional[str],
    confidence_threshold: float,
    min_confident_fraction: float,
    stats_interval: float,
    stats_jsonl: Optional[str],
    metrics_port: Optional[int],
    metrics_host: str,
    select_mode: str,
    select_rate: float,
    select_max_per_hour: Optional[float],
    select_min_spacing: int,
    select_min_seconds: float,
    select_spend_budget: bool,
    select_trust_novelty: Optional[float],
    spool_dir: Optional[str],
    spool_max_mb: Optional[float],
    jpeg_quality: Optional[int],
    neighbors: int,
    device_id: Optional[str],
    evaluate: bool,
    registry: Optional[str],
    update_every: str,
    public_key: Optional[str],
    model_cache: Optional[str],
) -> None:
    """Run depth estimation live: MODEL (a bundle directory, .onnx or .engine) on a source.

    Depth is metric (metres) everywhere: overlay, saved PNGs (millimetres), point clouds.
    SIGINT/SIGTERM finish the current frame, flush the spool and exit 0.
    """
    from edgedepth.runtime.backends import load_backend
    from edgedepth.runtime.capture import open_source
    from edgedepth.runtime.loop import DepthLoop
    from edgedepth.runtime.postprocess import Postprocessor
    from edgedepth.runtime.sinks import DepthPngSink, PointCloudSink, Visualizer, make_sink, opencv_has_gui
    from edgedepth.runtime.stats import LoopStats, MetricsServer, StatsReporter

    if max_frames is not None and max_frames <= 0:
        raise ConfigError("--max-frames must be positive")
    if registry and not public_key:
        raise ConfigError("--registry needs --public-key (the signing.pub of the publisher)")
    poll_every_s = parse_duration(update_every)
    device = None
    if device_name:
        from edgedepth.devices import load_device

        device = load_device(device_name)

    if threads is None:
        from edgedepth.runtime.backends.onnxruntime import pipeline_threads

        threads = pipeline_threads()
    # Everything that can fail on bad input fails here, before the loop starts.
    be = load_backend(model, backend=backend, device=device, threads=threads)
    _echo(f"backend: {be.describe()} - {be.reason or 'requested'}")
    pre = be.info.preprocessing
    relative = be.info.depth_units == "relative"
    if relative and save_pointcloud:
        raise ConfigError(f"{model} is a relative-depth model (trained on relative labels, no metric "
                          "scale): it cannot give point clouds in metres; drop --save-pointcloud or use a "
                          "metric model")
    _echo(
        f"model input {pre.height}x{pre.width}; depth output is "
        + ("RELATIVE (no metric scale; the model was trained on relative labels)" if relative else
           f"metric, in metres (range {pre.min_depth:g}-{pre.max_depth:g} m)")
    )
    be.warmup(2)
    post = Postprocessor(confidence_threshold, min_confident_fraction)
    fixed_K = None
    if intrinsics:
        from edgedepth.runtime.pointcloud import load_intrinsics

        fixed_K = load_intrinsics(intrinsics)

    sinks = []
    loop_ref = {}
    uris = list(outputs)
    if not uris and not headless:
        if opencv_has_gui():
            uris = ["display://0"]
        else:
            _echo("note: OpenCV has no GUI here, running headless (add --headless to silence this)")
    if headless:
        uris = [u for u in uris if not u.startswith("display://")]
    for uri in uris:
        sinks.append(make_sink(uri, on_quit=lambda: loop_ref["loop"].stop("quit key")))
    if save_depth:
        sinks.append(DepthPngSink(save_depth))
    if save_pointcloud:
        sinks.append(
            PointCloudSink(save_pointcloud, intrinsics=fixed_K, device=device, every=pointcloud_every)
        )
    visualizer = Visualizer(colormap, units="relative" if relative else "m") \
        if any(s.wants_view for s in sinks) else None

    selector = collector = None
    stats = LoopStats()
    if spool_dir or select_mode != "none":
        from edgedepth.runtime.selection import FrameSelector, SelectionConfig

        selector = FrameSelector(
            SelectionConfig(
                mode=select_mode,
                rate=select_rate,
                max_per_hour=select_max_per_hour,
                min_spacing_frames=select_min_spacing,
                min_spacing_seconds=select_min_seconds,
                spend_budget=select_spend_budget,
                trust_novelty=select_trust_novelty,
                min_depth=pre.min_depth,
                max_depth=pre.max_depth,
            ),
            reference=_bundle_reference(be),
        )
    if spool_dir:
        from edgedepth.runtime.collect import SpoolCollector
        from edgedepth.spool import Spool

        max_bytes = int(spool_max_mb * 1024 * 1024) if spool_max_mb else None
        collector = SpoolCollector(
            Spool(spool_dir, max_bytes=max_bytes),
            device_id=device_id or _default_device_id(),
            source_uri=input_uri,
            info=be.info,
            model_sha256=be.model_sha256,
            neighbors=neighbors,
            jpeg_quality=jpeg_quality,
            selection_mode=select_mode,
            count=stats.count,
        )

    source = open_source(input_uri, device=device, default_size=(pre.height, pre.width), loop=loop_input)
    stats.source_stats = source.stats
    reporter = StatsReporter(stats, interval=stats_interval, jsonl=stats_jsonl, echo=_echo)
    server = MetricsServer(stats, metrics_port, host=metrics_host) if metrics_port is not None else None
    if server is not None:
        _echo(f"metrics: http://{server.host}:{server.port}/metrics")
    loop = DepthLoop(
        source,
        be,
        sinks=sinks,
        visualizer=visualizer,
        selector=selector,
        collector=collector,
        stats=stats,
        reporter=reporter,
        postprocessor=post,
        max_frames=max_frames,
        evaluate=evaluate,
    )
    loop_ref["loop"] = loop
    watcher = None
    if registry:
        from edgedepth.registry.updater import ModelUpdater, installed_version
        from edgedepth.runtime.updates import RegistryWatcher

        cache = Path(model_cache) if model_cache else Path.home() / ".cache" / "edgedepth" / "models"
        current = installed_version(model) if Path(model).is_dir() else None
        updater = ModelUpdater(registry, public_key, cache, current_version=current,
                               poll_every_s=poll_every_s)
        watcher = RegistryWatcher(
            loop, updater, lambda path: load_backend(path, backend=backend, device=device, threads=threads),
            echo=_echo,
        ).start()
        _echo(f"updates: polling {registry} every {poll_every_s:g} s "
              f"(running version {current or 'unknown'})")
    previous = _install_signal_handlers(loop)
    _echo(
        f"running {input_uri} -> {', '.join(uris) or 'no display'}"
        + (f", spool {spool_dir}" if spool_dir else "")
        + " (Ctrl-C to stop)"
    )
    try:
        summary = loop.run()
    finally:
        if watcher is not None:
            watcher.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        source.close()
        if collector is not None:
            collector.close()
        if server is not None:
            server.close()
        reporter.close()
        be.close()
    if collector is not None:
        _echo(
            f"spool: {collector.written} item(s) written, {collector.dropped} dropped, "
            f"{stats.counters.get('spool_evicted', 0)} evicted"
        )
    if source.error and not summary.frames:
        raise ConfigError(f"source {input_uri} failed: {source.error}")
    _echo(f"stopped: {summary.reason}; {summary.frames} frames, {summary.errors} errors")


def _bundle_reference(backend):
    """The training-set appearance reference shipped in the bundle (novelty vs what the model has seen)."""
    from edgedepth.runtime.reference import bundle_of, load_reference

    ref = load_reference(bundle_of(getattr(backend, "model_path", "")))
    _echo("selection: novelty against the bundle's training reference" if ref is not None else
          "selection: no training reference in the bundle; scoring by uncertainty and flicker only")
    return ref


def parse_duration(text: str) -> float:
    """'45', '30s', '10m', '1h' -> seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    t = str(text).strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise ConfigError(f"bad duration {text!r}: use seconds or a number with s/m/h, e.g. 10m") from None
    if value <= 0:
        raise ConfigError(f"duration {text!r} must be positive")
    return value


def _default_device_id() -> str:
    name = socket.gethostname() or "device"
    return "".join(c if c.isalnum() or c in "_.:-" else "-" for c in name)[:128]


def _install_signal_handlers(loop) -> dict:
    """First SIGINT/SIGTERM: finish the current frame, flush, exit 0. A second one: exit at once."""
    previous = {}

    def handler(signum, _frame):
        if loop._stop.is_set():
            _echo("second signal: exiting now")
            os._exit(130)
        _echo(f"{signal.Signals(signum).name}: finishing the current frame and flushing the spool")
        loop.stop(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous
