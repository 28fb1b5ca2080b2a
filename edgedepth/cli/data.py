"""`edgedepth data`: make synthetic RGB-D datasets and inspect datasets."""

from __future__ import annotations

import json

import click

from edgedepth.cli.options import OutputPath, Size
from edgedepth.errors import ConfigError


@click.group()
def data() -> None:
    """Synthetic scenes and dataset inspection."""


@data.command()
@click.option(
    "--domain",
    default="indoor",
    show_default=True,
    help="Scene domain: indoor, outdoor, night, fog or clutter.",
)
@click.option("--frames", default=100, show_default=True, type=int, help="Number of frames to render.")
@click.option("--size", default="96x128", show_default=True, type=Size(min_side=8, max_side=4096),
              help="Image size HEIGHTxWIDTH.")
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed; the same seed gives the same frames."
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=OutputPath(file_okay=False),
    help="Output folder (rgb/, depth/ in uint16 mm, meta.json).",
)
@click.option(
    "--sequence",
    is_flag=True,
    help="Render videos (smooth camera trajectories, new scene every 150 frames) instead of "
    "independent random views.",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def synth(
    domain: str, frames: int, size: str, seed: int, out_dir: str, sequence: bool, no_progress: bool
) -> None:
    """Render a synthetic RGB-D dataset in the folder format."""
    from edgedepth.data import synth as synth_mod

    synth_mod.check_domain(domain)
    h, w = size
    if frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {frames}")
    out = synth_mod.write_synth_dataset(
        out_dir, domain, frames, h, w, seed, sequence=sequence, progress=not no_progress
    )
    click.echo(f"wrote {frames} {domain} frames ({h}x{w}) to {out}")


@data.command()
@click.argument("specs")
@click.option(
    "--skip-bad", is_flag=True, help="Skip and count unreadable or unpaired files instead of failing."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--max-samples",
    default=2000,
    show_default=True,
    type=int,
    help="Decode at most this many evenly spaced samples for the statistics.",
)
def info(specs: str, skip_bad: bool, as_json: bool, max_samples: int) -> None:
    """Summarise datasets: SPECS is DIR, a .mat file, kitti:DIR, nyu:FILE, or a comma-separated list."""
    from edgedepth.data.dataset import dataset_info, open_datasets

    ds = open_datasets(specs, skip_bad=skip_bad)
    rep = dataset_info(ds, max_samples=max_samples)
    if as_json:
        click.echo(json.dumps(rep, indent=1))
        return
    click.echo(f"dataset:     {rep['root']}")
    click.echo(f"count:       {rep['count']}")
    click.echo(f"skipped:     {rep['skipped']}")
    click.echo("domains:     " + (", ".join(f"{k} ({v})" for k, v in sorted(rep["domains"].items())) or "-"))
    click.echo(
        "resolutions: " + (", ".join(f"{k} ({v})" for k, v in sorted(rep["resolutions"].items())) or "-")
    )
    d = rep.get("depth")
    if d:
        click.echo(
            f"depth (m):   min {d['min']:.3f}  max {d['max']:.3f}  median {d['median_of_medians']:.3f}  "
            f"valid {100 * d['valid_fraction']:.1f}%  (over {rep['sampled']} samples)"
        )
    else:
        click.echo("depth:       no valid depth found")


@data.command("import")
@click.argument("source", type=click.Path())
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="New output folder (rgb/, depth/ when the source has depth, meta.json).")
@click.option("--topic", default=None,
              help="Colour topic of a bag (Image or CompressedImage); default RealSense's "
                   "/camera/color/image_raw[/compressed] or the only image topic.")
@click.option("--depth-topic", "depth_topic", default=None,
              help="Depth topic (16UC1 mm or 32FC1 m); default /camera/aligned_depth_to_color/image_raw "
                   "when present; 'none' to skip depth.")
@click.option("--info-topic", "info_topic", default=None,
              help="CameraInfo topic for the intrinsics; default the colour camera's; 'none' to skip.")
@click.option("--start", default=None, help="Skip frames before this time since the recording's start "
                                            "(e.g. 12.5s).")
@click.option("--end", default=None, help="Stop at this time since the recording's start (e.g. 60s).")
@click.option("--every", default=None, help="Keep at most one frame per interval, e.g. 0.5s or 200ms.")
@click.option("--change", type=float, default=None,
              help="Keep a frame only when it differs from the last kept one by at least this mean "
                   "absolute grey difference (0..1, e.g. 0.05).")
@click.option("--max-frames", "max_frames", type=int, default=None, help="Stop after this many frames.")
@click.option("--depth-tolerance", "tolerance", default="20ms", show_default=True,
              help="Largest time difference between a colour frame and the depth paired with it.")
@click.option("--image-format", "image_format", default="auto", show_default=True,
              type=click.Choice(["auto", "png", "jpg"]),
              help="auto: JPEG sources pass through unchanged, everything else becomes PNG.")
@click.option("--depth-format", "depth_format", default="auto", show_default=True,
              type=click.Choice(["auto", "png", "npy"]),
              help="auto: whole millimetres as uint16 PNG, other depth as float32 .npy (both lossless).")
@click.option("--domain", default=None, help="Domain name recorded in meta.json (e.g. warehouse).")
@click.option("--list-topics", "list_topics", is_flag=True, help="Print a bag's topics and exit.")
def import_cmd(source, out_dir, topic, depth_topic, info_topic, start, end, every, change, max_frames,
               tolerance, image_format, depth_format, domain, list_topics) -> None:
    """Import SOURCE into the folder dataset format: a ROS 2 bag (.mcap, .db3 or a rosbag2 folder), a
    ROS 1 .bag, a video file, or a folder of images (file names kept)."""
    from edgedepth.data.importer import import_recording
    from edgedepth.durations import optional_duration as parse_duration

    if list_topics:
        from edgedepth.data.bagfile import summarise_topics

        for line in summarise_topics(source):
            click.echo(line)
        return
    if not out_dir:
        raise ConfigError("give --out DIR, a new folder for the imported dataset")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {max_frames}")
    rep = import_recording(
        source, out_dir, topic=topic, depth_topic=depth_topic, info_topic=info_topic,
        start=parse_duration(start), end=parse_duration(end), every=parse_duration(every), change=change,
        max_frames=max_frames, tolerance=parse_duration(tolerance) or 0.0, image_format=image_format,
        depth_format=depth_format, domain=domain)
    if rep.topics:
        click.echo("topics: " + ", ".join(f"{k} {v or '-'}" for k, v in rep.topics.items()))
    click.echo(rep.summary())
