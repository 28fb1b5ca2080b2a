"""`edgedepth run`: the live loop on a device (source URI -> backend -> sinks, selection -> spool).

The options map onto the device file (`--config device.yaml`, edgedepth.config); the pipeline is built
from the merged, validated settings by edgedepth.runtime.app.build_pipeline.
"""

from __future__ import annotations

import click

from edgedepth.cli.options import InputPath, OutputPath, config_option, device_settings

# click parameter -> its key path in device.yaml
RUN_FLAGS = {
    "model": ("run", "model"), "input_uri": ("run", "input"), "outputs": ("run", "outputs"),
    "headless": ("run", "headless"), "backend": ("run", "backend"), "device_name": ("board",),
    "threads": ("run", "threads"), "colormap": ("run", "colormap"), "max_frames": ("run", "max_frames"),
    "loop_input": ("run", "loop"), "save_depth": ("run", "save_depth"),
    "save_pointcloud": ("run", "save_pointcloud"), "pointcloud_every": ("run", "pointcloud_every"),
    "intrinsics": ("run", "intrinsics"), "confidence_threshold": ("run", "confidence_threshold"),
    "min_confident_fraction": ("run", "min_confident_fraction"), "stats_interval": ("run", "stats_interval"),
    "stats_jsonl": ("run", "stats_jsonl"), "metrics_port": ("run", "metrics_port"),
    "metrics_host": ("run", "metrics_host"), "select_mode": ("run", "select", "mode"),
    "select_rate": ("run", "select", "rate"), "select_max_per_hour": ("run", "select", "max_per_hour"),
    "select_min_spacing": ("run", "select", "min_spacing_frames"),
    "select_min_seconds": ("run", "select", "min_spacing_seconds"),
    "select_spend_budget": ("run", "select", "spend_budget"),
    "select_trust_novelty": ("run", "select", "trust_novelty"), "spool_dir": ("spool",),
    "spool_max_mb": ("spool_max_mb",), "jpeg_quality": ("run", "jpeg_quality"),
    "neighbors": ("run", "neighbors"), "device_id": ("device_id",), "evaluate": ("run", "evaluate"),
    "registry": ("run", "registry"), "update_every": ("run", "update_every"),
    "public_key": ("run", "public_key"), "model_cache": ("run", "model_cache"),
}


def _echo(line: str) -> None:
    click.echo(line, err=True)


@click.command("run")
@click.argument("model", required=False, type=InputPath())
@config_option("run")
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
    help="Output URI (repeatable): display://0, out.mp4 / file://out.mp4, out/frame_%05d.png, "
    "rerun://HOST:PORT (a live Rerun viewer), run.rrd / rerun+file://run.rrd (a Rerun recording), "
    "run.mcap[?cloud_every=10] (ROS 2 topics for Foxglove and ros2 bag play). "
    "Default: display://0 when OpenCV has a GUI, else none.",
)
@click.option("--headless", is_flag=True, help="No display window.")
@click.option(
    "--backend",
    type=click.Choice(["auto", "trt", "ort-cuda", "ort-trt", "ort-cpu"]),
    default="auto",
    show_default=True,
    help="Inference backend; auto times each one the bundle and this machine offer (20 warm runs, "
    "cached per bundle and machine) and takes the fastest.",
)
@click.option(
    "--board",
    "--device",
    "device_name",
    default=None,
    help="Board config (name from `edgedepth devices` or a YAML path): engine choice, CSI pipeline, "
    "camera intrinsics; `board:` in --config. --device is the older name.",
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
    type=OutputPath(file_okay=False),
    default=None,
    help="Directory for depth maps: 16-bit PNG in millimetres (0 = invalid).",
)
@click.option(
    "--save-pointcloud",
    type=OutputPath(file_okay=False),
    default=None,
    help="Directory for PLY point clouds (metres) from depth and intrinsics.",
)
@click.option(
    "--pointcloud-every", type=int, default=1, show_default=True, help="Write every Nth point cloud."
)
@click.option(
    "--intrinsics",
    type=InputPath(dir_okay=False),
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
    "--stats-jsonl", type=OutputPath(dir_okay=False), default=None,
    help="Append stats as JSON lines to this file."
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
    type=OutputPath(file_okay=False),
    default=None,
    help="Spool directory for selected frames (read by `edgedepth upload`).",
)
@click.option(
    "--spool-max-mb", type=float, default=None,
    help="Spool size cap in MiB (1 MiB = 1,048,576 B; the unit of `edgedepth upload --spool-max-mb` too), "
    "failed/ included; rejected items are evicted first, then the lowest-score items.",
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
    type=OutputPath(file_okay=False),
    default=None,
    help="Where verified updates are kept (default: ~/.cache/edgedepth/models).",
)
@click.option(
    "--evaluate",
    is_flag=True,
    help="Compute AbsRel etc. against the source's ground truth (synthetic sources) and report it.",
)
@click.pass_context
def run(ctx: click.Context, config_path, **_options) -> None:
    """Run depth estimation live: MODEL (a bundle directory, .onnx or .engine) on a source.

    Depth is metric (metres) everywhere: overlay, saved PNGs (millimetres), point clouds.
    SIGINT/SIGTERM finish the current frame, flush the spool and exit 0. With --config DEVICE.yaml the
    device's settings (board, spool, device id, ...) come from that file; flags override it.
    """
    from edgedepth.runtime.app import build_pipeline

    settings = device_settings(ctx, config_path, RUN_FLAGS)
    build_pipeline(settings, echo=_echo).run()
