"""`edgedepth baseline ...`: non-learned baselines scored with the learned model's metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from edgedepth.cli.options import InputPath, OutputPath, Sizes


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
@click.option("--json", "json_out", default=None, type=OutputPath(dir_okay=False),
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


@click.command("bench")
@click.argument("bundle", type=InputPath(file_okay=False))
@click.option("--checkpoint", default=None, type=InputPath(dir_okay=False),
              help="Checkpoint for the PyTorch eager row; default: the one the bundle's lineage names, "
                   "or a .pt beside the bundle whose SHA-256 the exported model records.")
@click.option("--backends", default="all", show_default=True,
              help="Comma list of runtimes: pytorch, opencv, ort-fp32, ort-int8-cpu, ort-int8-trt, "
                   "pytorch-cuda, ort-cuda, trt (or trt-fp16, trt-int8), loop (live-loop efficiency).")
@click.option("--sizes", default=None, type=Sizes(multiple_of=32),
              help="Input sizes HxW,HxW,... (multiples of 32); default: the bundle's. Other sizes run "
                   "the same ONNX graphs with the input size rewritten.")
@click.option("--threads", default=None, type=int,
              help="Threads for every runtime (PyTorch, OpenCV, ONNX Runtime); default: all usable cores.")
@click.option("--data", default=None,
              help="Held-out frames with depth for accuracy (DIR or DIR,DIR,...); default: synthetic frames "
                   "rendered here with a fixed seed.")
@click.option("--frames", default=16, show_default=True, type=int,
              help="Held-out frames scored for accuracy (they are also the timing inputs).")
@click.option("--runs", default=100, show_default=True, type=int, help="Timed runs per runtime and size.")
@click.option("--block", default=10, show_default=True, type=int,
              help="Timed runs per runtime in each round-robin block.")
@click.option("--budget", default=60.0, show_default=True, type=float,
              help="Seconds of timing per input size; no new round-robin block starts after it (at least 2 "
                   "blocks run), so a very slow runtime shortens the run for all alike.")
@click.option("--domain", default="indoor", show_default=True,
              help="Synthetic scene domain of the default held-out frames and of the live-loop clip.")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Measure each runtime's peak RSS in a fresh subprocess.")
@click.option("--json", "json_out", default=None, type=OutputPath(dir_okay=False),
              help="Write the full report to this JSON file.")
@click.option("--png", "png_out", default=None, type=OutputPath(dir_okay=False),
              help="Write a latency/accuracy chart to this PNG file.")
def bench(bundle: str, checkpoint: Optional[str], backends: str, sizes: Optional[list],
          threads: Optional[int], data: Optional[str], frames: int, runs: int, block: int, budget: float,
          domain: str, memory: bool, json_out: Optional[str], png_out: Optional[str]) -> None:
    """Latency, throughput, peak memory and accuracy of BUNDLE on every runtime a user could pick.

    PyTorch eager, OpenCV DNN, ONNX Runtime FP32 and INT8 (and on a GPU: ONNX Runtime CUDA, TensorRT)
    are timed in one run, interleaved, with the same thread count; runtimes that cannot run here are
    listed with the reason.
    """
    from edgedepth.bench.report import format_report, write_json
    from edgedepth.bench.suite import run_bench

    report = run_bench(bundle, checkpoint=checkpoint, backends=backends, sizes=sizes or None,
                       threads=threads, data=data, frames=frames, runs=runs, block=block, memory=memory,
                       domain=domain, budget_s=budget if budget > 0 else None,
                       say=lambda s: click.echo(s, err=True))
    click.echo(format_report(report))
    if json_out:
        click.echo(f"wrote {write_json(report, json_out)}")
    if png_out:
        from edgedepth.bench.chart import write_chart

        click.echo(f"wrote {write_chart(report, png_out)}")
