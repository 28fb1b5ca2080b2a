"""`edgedepth baseline ...`: non-learned baselines scored with the learned model's metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click


@click.group("baseline")
def baseline() -> None:
    """Non-learned depth baselines, scored on the same frames and metrics as a trained model."""


@baseline.command("classical")
@click.option("--data", "data_dir", required=True,
              help="Sequence dataset directory (or DIR,DIR,...) with per-frame poses and intrinsics in "
                   "meta.json (e.g. from `edgedepth data synth --sequence`). Frames pair only within "
                   "a folder and scene.")
@click.option("--gap", default=6, show_default=True, type=int,
              help="Partner frame = reference + GAP in the same sequence (the baseline of the pair).")
@click.option("--method", type=click.Choice(["flow", "sgbm"]), default="flow", show_default=True,
              help="flow: dense optical flow + triangulation with the known motion; sgbm: semi-global "
                   "matching on the stereo-rectified pair (pairs that cannot be rectified are holes).")
@click.option("--flow", "flow_kind", type=click.Choice(["dis", "farneback"]), default="dis",
              show_default=True,
              help="Dense optical flow algorithm for --method flow.")
@click.option("--features", type=click.Choice(["orb", "sift", "orb+sift"]), default="orb+sift",
              show_default=True, help="Keypoints matched to check each pair against its known motion.")
@click.option("--min-matches", default=20, show_default=True, type=int,
              help="Matches consistent with the known motion a pair needs; fewer = the pair is skipped.")
@click.option("--fill", type=click.Choice(["nearest", "median"]), default="nearest", show_default=True,
              help="How holes are filled for the dense (headline) metrics.")
@click.option("--min-depth", default=0.1, show_default=True, type=float,
              help="Evaluation depth range: lower bound (metres), as the learned model's preprocessing.")
@click.option("--max-depth", default=40.0, show_default=True, type=float,
              help="Evaluation depth range: upper bound (metres), as the learned model's preprocessing.")
@click.option("--limit", default=None, type=int, help="Evaluate at most this many frames.")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False),
              help="Write the report (and per-frame rows) to this JSON file.")
def classical(data_dir: str, gap: int, method: str, flow_kind: str, features: str, min_matches: int,
              fill: str, min_depth: float, max_depth: float, limit: Optional[int],
              json_out: Optional[str]) -> None:
    """Two-view classical depth (features -> matches -> flow -> triangulation, or SGBM) on a sequence.

    Prints coverage, metrics over the predicted pixels and, as the headline, metrics with holes
    filled (comparable with a dense learned model).
    """
    from edgedepth.bench.classical import ClassicalConfig
    from edgedepth.bench.classical_eval import evaluate_classical, load_sequence
    from edgedepth.errors import DataError
    from edgedepth.metrics import format_metrics_table

    dirs = [d.strip() for d in data_dir.split(",") if d.strip()]
    for d in dirs:
        if not Path(d).is_dir():
            raise DataError(f"dataset directory {d} does not exist")
    cfg = ClassicalConfig(method=method, flow=flow_kind, features=features, min_matches=min_matches,
                          max_depth=max(80.0, max_depth))
    frames = []
    for k, d in enumerate(dirs):
        for fr in load_sequence(d, limit):
            fr.sequence = (k, fr.sequence)  # never pair frames of different folders
            fr.name = f"{Path(d).name}/{fr.name}" if len(dirs) > 1 else fr.name
            frames.append(fr)
    if limit is not None:
        frames = frames[:limit]
    report = evaluate_classical(frames, gap=gap, cfg=cfg, fill=fill, min_depth=min_depth, max_depth=max_depth)
    counts = ", ".join(f"{k}={v}" for k, v in sorted(report.status_counts.items()))
    click.echo(f"classical {report.method} on {data_dir}: {report.frames} frames, gap {gap}; pairs: {counts}")
    click.echo(f"coverage {report.coverage:.3f} of ground-truth pixels; "
               f"{report.seconds_per_frame * 1000:.0f} ms/frame")
    click.echo(format_metrics_table({"covered": report.covered, f"filled ({fill}) *": report.filled}))
    click.echo("* headline: dense, holes filled; 'covered' scores only the pixels the method predicts")
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(report.to_dict(with_frames=True), indent=2, default=float))
        click.echo(f"wrote {json_out}")
