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
