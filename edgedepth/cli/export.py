"""`edgedepth export | calibrate | lint | build | devices`: checkpoint -> bundle -> engine, per board."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Tuple

import click

from edgedepth.cli.options import InputPath, OutputPath, Size
from edgedepth.errors import ConfigError, EdgeDepthError
from edgedepth.preprocess import SELECTION_STRIDE

log = logging.getLogger(__name__)


def _echo_lines(lines) -> None:
    for line in lines:
        click.echo(line)


@click.command("export")
@click.argument("checkpoint", type=InputPath(dir_okay=False))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=OutputPath(file_okay=False),
    help="Bundle directory to write model.onnx and manifest.json into.",
)
@click.option(
    "--size", default=None, type=Size(multiple_of=32),
    help="Input size HEIGHTxWIDTH (multiples of 32); default: the checkpoint's."
)
@click.option(
    "--opset",
    type=int,
    default=None,
    help="ONNX opset; default: the highest the --device's TensorRT parses (17 without a device).",
)
@click.option("--board", "--device", "device", default=None,
              help="Target board name or board YAML (sets the opset limit); --device is the older name.")
@click.option(
    "--dynamic-batch", is_flag=True, help="Export a dynamic batch dimension (engines get a profile)."
)
@click.option(
    "--data",
    default=None,
    help="Validation frames (DIR or DIR,DIR,...) for the parity check; default: synthetic frames.",
)
@click.option(
    "--frames",
    "parity_frames",
    default=32,
    show_default=True,
    type=int,
    help="Frames used for the parity check.",
)
@click.option(
    "--tolerance",
    default=1e-4,
    show_default=True,
    type=float,
    help="Max relative depth error vs PyTorch before the export is refused.",
)
@click.option(
    "--reference-data",
    default=None,
    help="The model's training data, DIR or DIR,DIR: ships appearance embeddings of up to 600 of its frames "
    "in the bundle so the live loop scores novelty against what the model was trained on.",
)
@click.option(
    "--input-format",
    type=click.Choice(["float-nchw", "uint8-hwc-bgr", "uint8-hwc-rgb"]),
    default="float-nchw",
    show_default=True,
    help="float-nchw: normalised float input, preprocessed on the CPU. uint8-hwc-bgr/-rgb: the model takes "
    "the camera's bytes (N,H,W,3) and resizes, reorders and normalises them inside the graph (GPU work "
    "under TensorRT); see docs/export.md.",
)
@click.option(
    "--input-size",
    default=None,
    type=Size(),
    help="Camera image size HEIGHTxWIDTH a uint8 input takes (any size; default: the model's --size).",
)
@click.option(
    "--selection-stride",
    default=SELECTION_STRIDE,
    show_default=True,
    type=click.IntRange(min=0),
    help="Compute the hard-frame selector's per-frame features inside the graph (a third output, "
    "'selection'), sampling the maps every N pixels as the selector does; 0 leaves them to the CPU.",
)
def export_cmd(
    checkpoint: str,
    out_dir: str,
    size: Optional[str],
    opset: Optional[int],
    device: Optional[str],
    dynamic_batch: bool,
    data: Optional[str],
    parity_frames: int,
    tolerance: float,
    reference_data: Optional[str],
    input_format: str,
    input_size: Optional[Tuple[int, int]],
    selection_stride: int,
) -> None:
    """Export a checkpoint to BUNDLE/model.onnx (FP32) and check it against PyTorch."""
    from edgedepth.export.onnx import export_onnx

    report = export_onnx(
        checkpoint, out_dir, size, opset, device, dynamic_batch, data,
        parity_frames, tolerance, input_format=input_format, input_size=input_size,
        selection_stride=selection_stride,
    )
    click.echo(
        f"wrote {report['path']} (opset {report['opset']}, input {report['input']}, "
        f"{sum(report['ops'].values())} nodes: "
        + ", ".join(f"{k} {v}" for k, v in report["ops"].items())
        + ")"
    )
    if report["int64_initializers"]:
        click.echo(f"INT64 initializers: {', '.join(report['int64_initializers'])}")
    _echo_lines(report["lines"])
    click.echo("times: " + ", ".join(f"{k} {v:.2f}s" for k, v in report["times_s"].items()))
    if reference_data:
        from edgedepth.bundle import write_manifest
        from edgedepth.runtime.reference import build_reference, save_reference

        emb = build_reference([d for d in reference_data.split(",") if d])
        click.echo(f"wrote {save_reference(out_dir, emb)} ({len(emb)} training-frame embeddings)")
        write_manifest(out_dir)


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--data",
    required=True,
    help="Frames to calibrate on, DIR or DIR,DIR,... (a quarter is held out for the accuracy gate).",
)
@click.option(
    "--target",
    type=click.Choice(["trt", "cpu"]),
    required=True,
    help="trt: symmetric INT8 Q/DQ for TensorRT; cpu: the fastest INT8 layout for onnxruntime CPU.",
)
@click.option(
    "--method",
    type=click.Choice(["minmax", "entropy", "percentile", "auto"]),
    default="minmax",
    show_default=True,
    help="Range calibration method; auto tries all and keeps the best.",
)
@click.option(
    "--frames",
    "n_frames",
    default=256,
    show_default=True,
    type=int,
    help="Calibration frames, chosen for coverage (k-center greedy).",
)
@click.option("--allow-drop", is_flag=True, help="Write the INT8 model even if the accuracy gate fails.")
@click.option(
    "--holdout",
    default=None,
    help="Held-out frames for the gate, DIR or DIR,DIR,... (default: every 4th frame of --data).",
)
@click.option("--board", "--device", "device", default=None,
              help="Board the TensorRT cache header is written for (--device is the older name).")
@click.option("--threads", default=1, show_default=True, type=int, help="onnxruntime threads for timing.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def calibrate(
    model: str,
    data: str,
    target: str,
    method: str,
    n_frames: int,
    allow_drop: bool,
    holdout: Optional[str],
    device: Optional[str],
    threads: int,
    no_progress: bool,
) -> None:
    """Quantize BUNDLE/model.onnx to INT8 for TensorRT or the CPU, behind an accuracy gate."""
    from edgedepth.calibrate.pipeline import calibrate_model
    from edgedepth.errors import GateRefused

    try:
        report = calibrate_model(model, data, target, method, n_frames, allow_drop, holdout, device, threads,
                                 progress=not no_progress)
    except GateRefused:
        _print_calibration(Path(model).parent / "calibration.json", target)
        raise
    _print_calibration(Path(model).parent / "calibration.json", target, report)


def _print_calibration(path: Path, target: str, report: Optional[dict] = None) -> None:
    if report is None:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            return
    sec = report.get("targets", {}).get(target, {})
    fp = sec.get("fp32_metrics", {})
    click.echo(
        f"FP32 on {fp.get('frames', 0)} held-out frames (vs {sec.get('gate_reference')}): "
        f"delta1 {fp.get('d1', float('nan')):.4f}, AbsRel {fp.get('abs_rel', float('nan')):.4f}"
    )
    for name, m in sec.get("methods", {}).items():
        g = m.get("gate", {})
        line = (
            f"  {name:10s} delta1 {m['metrics']['d1']:.4f} (drop {g.get('d1_drop', 0):+.4f}), AbsRel "
            f"{m['metrics']['abs_rel']:.4f} ({g.get('abs_rel_rise', 0) * 100:+.2f}%) "
            f"{'PASS' if g.get('passed') else 'FAIL'}"
        )
        if "speed" in m:
            s = m["speed"]
            line += (f"; {s['int8_ms']:.2f} ms vs FP32 {s['fp32_ms']:.2f} ms = {s['ratio']:.2f}x "
                     f"({m['layout']['format']})")
        click.echo(line)
        if m.get("fallback"):
            _print_fallback(m["fallback"])
    if sec.get("written"):
        click.echo(f"wrote {path.parent / sec['artifact']} (method {sec.get('chosen_method')})")
    click.echo(f"report: {path}")


def _print_fallback(fb: dict) -> None:
    """The per-layer float fallback of a refused INT8 TensorRT model (calibrate/fallback.py)."""
    full = fb.get("full_int8", {}).get("gate")
    if full:
        click.echo(f"    all layers INT8: delta1 drop {full['d1_drop']:+.4f}, AbsRel "
                   f"{full['abs_rel_rise'] * 100:+.2f}% FAIL ({'; '.join(full['reasons'])})")
    top = ", ".join(f"{r['layer']} ({r['abs_rel_vs_fp32']:.4f})" for r in fb.get("sensitivity", [])[:3])
    click.echo(f"    sensitivity (AbsRel vs FP32 with only that layer INT8), top: {top}")
    if not fb.get("passed"):
        click.echo(f"    float fallback: no set of float layers passed the gate "
                   f"({len(fb.get('steps', []))} tried)")
        return
    g, share = fb["gate"], fb["share"]
    click.echo(f"    float fallback: {len(fb['float_layers'])} of {fb['quantized_layers']} quantized layers "
               f"left un-quantized: {', '.join(fb['float_layers'])}")
    click.echo(f"    with them in float: delta1 drop {g['d1_drop']:+.4f}, "
               f"AbsRel {g['abs_rel_rise'] * 100:+.2f}% PASS; INT8 still runs "
               f"{share['int8_weighted_layers']}/{share['weighted_layers']} weighted layers, "
               f"{share['int8_mac_fraction'] * 100:.1f}% of the MACs")
    lat = fb.get("cpu_latency")
    if lat:
        click.echo(f"    onnxruntime CPU (not a TensorRT figure): FP32 {lat['fp32_ms']:.2f} ms, full INT8 "
                   f"{lat['full_int8_ms']:.2f} ms, mixed {lat['mixed_ms']:.2f} ms")


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--board", "--device", "device", required=True,
              help="Board name (see `edgedepth devices`) or board YAML; --device is the older name.")
@click.option(
    "--calib-report",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="calibration.json with activation ranges (FP16 overflow check); default: the bundle's.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8", "best"]),
    default=None,
    help="Precision you intend to build with (checked against the board).",
)
@click.option("--dla-core", type=int, default=None, help="DLA core you intend to use.")
@click.option("--json", "as_json", is_flag=True, help="Print findings as JSON.")
def lint(
    model: str,
    device: str,
    calib_report: Optional[str],
    precision: Optional[str],
    dla_core: Optional[int],
    as_json: bool,
) -> None:
    """Check an ONNX model against a board's TensorRT without a GPU (errors exit non-zero)."""
    from edgedepth.export.lint import lint_model

    if calib_report is None and (Path(model).parent / "calibration.json").is_file():
        calib_report = str(Path(model).parent / "calibration.json")
    report = lint_model(model, device, calib_report, precision, dla_core)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for f in report.findings:
            click.secho(f.line(), fg={"error": "red", "warning": "yellow"}.get(f.level))
        click.echo(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    if not report.ok:
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--board", "--device", "device", required=True,
              help="Board name (see `edgedepth devices`) or board YAML; --device is the older name.")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8", "best"]),
    default=None,
    help="Engine precision; default: int8 for a Q/DQ model, else the board's default.",
)
@click.option("--dla-core", type=int, default=None, help="Build for this DLA core (GPU fallback on).")
@click.option("--workspace", type=int, default=None, help="Builder workspace in MiB; default: the board's.")
@click.option(
    "--timing-cache",
    default=None,
    type=OutputPath(dir_okay=False),
    help="Timing cache file to read and update (speeds up rebuilds).",
)
@click.option(
    "--max-batch", default=8, show_default=True, type=int, help="Profile max batch (dynamic batch)."
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=OutputPath(file_okay=False),
    help="Folder for the engine and its manifest; default: BUNDLE/engines.",
)
@click.option("--dry-run", is_flag=True, help="Print the exact builder settings; needs no TensorRT or GPU.")
@click.option("--force", is_flag=True, help="Build even when an engine with a matching manifest exists.")
@click.option(
    "--fp16-onnx-only",
    is_flag=True,
    help="Only write the FP16 copy of MODEL (workstation, needs onnx) that a strongly typed build parses: "
    "model.fp16.onnx (TensorRT 11 FP16) or, for a mixed Q/DQ model, model.int8.trt.fp16.onnx (10.12+).",
)
@click.pass_context
def build(
    ctx: click.Context,
    model: str,
    device: str,
    precision: Optional[str],
    dla_core: Optional[int],
    workspace: Optional[int],
    timing_cache: Optional[str],
    max_batch: int,
    out_dir: Optional[str],
    dry_run: bool,
    force: bool,
    fp16_onnx_only: bool,
) -> None:
    """Build a TensorRT engine for a board (on the board, or an identical JetPack).

    An engine whose manifest matches this ONNX, these settings and the installed TensorRT is kept (a
    second start does not build again); --force builds anyway."""
    from edgedepth.devices import load_device, version_tuple
    from edgedepth.export.trt_build import _import_trt, build_engine, engine_is_current, plan_build

    dev = load_device(device)
    if fp16_onnx_only:
        from edgedepth.export.fp16 import write_fp16_onnx

        out = write_fp16_onnx(model)
        click.echo(f"wrote {out} (FP16, FP32 I/O, Q/DQ kept; copy it with the bundle to the board)")
        return
    trt = None
    trt_version = None
    if not dry_run:
        trt = _import_trt()
        trt_version = str(trt.__version__)
        if version_tuple(trt_version)[:2] != dev.trt_version[:2]:
            click.secho(
                f"warning: {dev.board} ships TensorRT {dev.tensorrt}; building with the installed "
                f"{trt_version} (the engine is named and checked by that version)",
                fg="yellow",
            )
    plan = plan_build(
        model, dev, precision, dla_core, workspace, timing_cache, max_batch, trt_version, out_dir
    )
    if dry_run:
        click.echo("TensorRT builder settings (dry run):")
        _echo_lines("  " + line for line in plan.lines())
        return
    from edgedepth.backends.tensorrt.build import fp16_onnx_for, gpu_info

    current = None if force else engine_is_current(plan, str(trt.__version__), gpu_info().get("gpu_sm"))
    if current is not None:
        click.echo(
            f"engine up to date: {plan.engine_path} (built {current.get('created')} with TensorRT "
            f"{current.get('tensorrt')} from this ONNX and these settings; --force builds it again)"
        )
        return
    if plan.convert_to_fp16_onnx:
        import importlib.util

        try:
            fp16_onnx_for(plan)
            stale = False
        except ConfigError:
            stale = True
        if stale and importlib.util.find_spec("onnx") is not None:  # a workstation: convert here
            from edgedepth.export.fp16 import write_fp16_onnx

            written = write_fp16_onnx(plan.onnx, plan.fp16_onnx)
            click.echo(f"wrote {written} for the strongly typed build (its float layers in FP16)")
    verbose = bool(ctx.find_root().obj and ctx.find_root().obj.get("verbose"))
    manifest = build_engine(plan, trt, verbose)
    click.echo(
        f"wrote {plan.engine_path} ({manifest['engine_bytes']} bytes, {manifest['build_time_s']:.1f} s, "
        f"TensorRT {manifest['tensorrt']}, {manifest.get('gpu_name')} SM {manifest.get('gpu_sm')})"
    )
    click.echo(f"manifest: {plan.manifest_path}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the validated configs as JSON.")
@click.argument("name", required=False)
def devices(as_json: bool, name: Optional[str]) -> None:
    """List the built-in target boards (or show one board's full config)."""
    from edgedepth.devices import list_devices, load_device

    if name:
        cfg = load_device(name)
        click.echo(json.dumps(cfg.model_dump(), indent=2))
        return
    rows = []
    for board in list_devices():
        try:
            rows.append(load_device(board).summary_row())
        except EdgeDepthError as exc:  # a broken file must not hide the others
            click.secho(f"{board}: {exc}", fg="red", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        raise ConfigError("no device configs found")
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    click.echo("  ".join(c.ljust(widths[c]) for c in cols))
    click.echo("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        click.echo("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
