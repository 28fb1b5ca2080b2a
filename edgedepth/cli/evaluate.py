"""`edgedepth eval` (metrics on a dataset) and `edgedepth predict` (depth maps for images).

Both accept a checkpoint (.pt, needs torch) or an ONNX file (onnxruntime only).
"""

from __future__ import annotations

from pathlib import Path

import click

from edgedepth.cli.options import InputPath, OutputPath
from edgedepth.cli.teacher import teacher_options
from edgedepth.errors import DataError

COLORMAPS = ("inferno", "turbo", "viridis")


@click.command("eval")
@click.argument("model", type=InputPath(dir_okay=False), required=False)
@click.option("--data", "data", required=True, multiple=True,
              help="Dataset spec(s): folder, NYU .mat, KITTI folder (optionally nyu:/kitti:/folder:), "
                   "comma-separated or repeated.")
@click.option("--json", "json_out", type=OutputPath(dir_okay=False), default=None,
              help="Also write overall, per-domain and per-frame results to this JSON file.")
@click.option("--limit", type=int, default=None, help="At most this many frames per dataset.")
@click.option("--batch-size", "batch_size", type=int, default=16, show_default=True, help="Inference batch.")
@click.option("--crop", default="none", show_default=True, type=click.Choice(["none", "eigen", "garg"]),
              help="Score only the standard crop: eigen (NYU's, or KITTI's on KITTI) or garg (KITTI).")
@click.option("--median-scaling/--no-median-scaling", "median_scaling", default=False, show_default=True,
              help="Scale each prediction by median(gt)/median(pred) first (relative models).")
@click.option("--max-depth", "max_depth", type=float, default=None,
              help="Score ground truth up to this depth [m] (min 1e-3) and clip predictions to it; "
                   "default 10 for NYU, 80 for KITTI, the model's range for folders.")
@click.option("--teacher", default=None,
              help="Score a teacher instead of MODEL (.pt, .onnx, hf:ORG/NAME, save_pretrained folder); a "
                   "relative teacher is aligned to each frame's ground truth (scale and shift) first.")
@teacher_options
def eval_cmd(model, data, json_out, limit, batch_size, crop, median_scaling, max_depth, teacher,
             **teacher_kw) -> None:
    """Evaluate MODEL (.pt checkpoint or .onnx) on datasets: AbsRel, SqRel, RMSE, RMSE-log, deltas.

    Prints one row for all frames and one per domain (when meta.json names domains), and the
    Spearman correlation of per-frame mean uncertainty with per-frame AbsRel.
    """
    from edgedepth.eval_protocol import Protocol
    from edgedepth.evaluation import evaluate
    from edgedepth.train.config import split_dirs

    if teacher:
        from edgedepth.cli.teacher import open_from_options
        from edgedepth.teachers.score import score_teacher

        if model:
            raise DataError("give MODEL or --teacher, not both")
        t, cache = open_from_options(teacher, teacher_kw)
        score = score_teacher(t, split_dirs(list(data)), cache, limit)
        click.echo(score.table())
        click.echo(f"({score.frames} frames in {score.seconds:.1f} s; teacher output {score.kind}"
                   + ("" if score.kind == "metric" else ", aligned to each frame's ground truth") + ")")
        return
    if not model:
        raise DataError("give MODEL (a .pt or .onnx file) or --teacher SPEC")
    protocol = Protocol(crop=crop, median_scaling=median_scaling, max_depth=max_depth)
    result = evaluate(model, split_dirs(list(data)), batch_size=batch_size, limit=limit, protocol=protocol)
    click.echo(result.table())
    for name, how in result.protocol.items():
        click.echo(f"protocol {name}: {how}")
    click.echo(f"({len(result.frames)} frames in {result.seconds:.1f} s; depth in metres)")
    if json_out:
        click.echo(f"wrote {result.write_json(json_out)}")


def colourise(depth, min_depth: float, max_depth: float, colormap: str = "inferno", units: str = "m"):
    """Depth (m) -> BGR preview: near is bright, on a log scale stretched to the frame's 1st-99th
    percentile within the model's range, with a colour bar (near/far in metres) on the right."""
    import cv2
    import numpy as np

    from edgedepth.colorbar import preview

    cmap = {"inferno": cv2.COLORMAP_INFERNO, "turbo": cv2.COLORMAP_TURBO, "viridis": cv2.COLORMAP_VIRIDIS}
    return preview(np.clip(depth, min_depth, max_depth), cmap[colormap], scale="log", percentiles=(1, 99),
                   units=units)


def _predict_inputs(paths):
    """[(image path, output stem relative to --out)]: files as given, folders' images (recursively, sorted)
    under their relative path; an image keeps its name (the extension too where two would collide)."""
    from edgedepth.runtime.sources import IMAGE_EXTENSIONS

    found = []
    for p in map(Path, paths):
        if p.is_dir():
            imgs = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not imgs:
                raise DataError(f"folder {p} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            found += [(f, f.relative_to(p)) for f in imgs]
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:
            raise DataError(f"image {p} does not exist")
    stems = [rel.with_suffix("") for _, rel in found]
    return [(f, rel if stems.count(rel.with_suffix("")) > 1 else rel.with_suffix(""))
            for (f, rel) in found]


@click.command("predict")
@click.option("--model", required=True, type=InputPath(dir_okay=False),
              help="Checkpoint (.pt) or ONNX file.")
@click.argument("images", nargs=-1, required=True, type=InputPath())
@click.option("--out", required=True, type=OutputPath(file_okay=False), help="Output folder.")
@click.option("--colormap", default="inferno", show_default=True, type=click.Choice(COLORMAPS),
              help="Colour map of the preview PNG.")
def predict(model, images, out, colormap) -> None:
    """Predict metric depth for IMAGES (files or folders of images) of any size.

    Writes, per image, into --out: NAME.depth.png (uint16 millimetres), NAME.depth.npy (float32
    metres) and NAME.color.png (colourised preview with a colour bar in metres), at the image's own
    size. NAME is the input's name (a folder's images keep their relative paths).
    """
    import cv2
    import numpy as np

    from edgedepth.colorbar import depth_units
    from edgedepth.predictor import Predictor

    inputs = _predict_inputs(images)
    predictor = Predictor(model)
    pre = predictor.preprocessing
    units = depth_units(getattr(predictor, "info", None))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for img, rel in inputs:
        bgr = cv2.imread(str(img), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"cannot decode image {img}; use PNG or JPEG")
        pred = predictor.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        stem = out_dir / rel
        stem.parent.mkdir(parents=True, exist_ok=True)
        mm = np.clip(np.round(pred.depth * 1000.0), 0, 65535).astype(np.uint16)
        cv2.imwrite(f"{stem}.depth.png", mm)
        np.save(f"{stem}.depth.npy", pred.depth.astype(np.float32))
        cv2.imwrite(f"{stem}.color.png", colourise(pred.depth, pre.min_depth, pre.max_depth, colormap,
                                                       units))
        h, w = pred.depth.shape
        click.echo(f"{img}: {w}x{h}  depth {float(pred.depth.min()):.2f}.."
                   f"{float(pred.depth.max()):.2f} m (median {float(np.median(pred.depth)):.2f} m)  "
                   f"mean uncertainty {pred.mean_uncertainty:.3f} -> {stem}.depth.png/.depth.npy/.color.png")
    if predictor.info.depth_units == "relative":
        click.echo("depth is RELATIVE (the model was trained on relative labels: right up to a per-image "
                   "scale and shift of inverse depth); the files hold it in the same units as metric models")
        return
    click.echo(f"depth is metric metres (z along the optical axis, model range {pre.min_depth:g}.."
               f"{pre.max_depth:g} m); the .depth.png files hold millimetres as uint16")
