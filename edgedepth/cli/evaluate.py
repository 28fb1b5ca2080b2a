"""`edgedepth eval` (metrics on a dataset) and `edgedepth predict` (depth maps for images).

Both accept a checkpoint (.pt, needs torch) or an ONNX file (onnxruntime only).
"""

from __future__ import annotations

from pathlib import Path

import click

from edgedepth.cli.teacher import teacher_options
from edgedepth.errors import DataError

COLORMAPS = ("inferno", "turbo", "viridis")


@click.command("eval")
@click.argument("model", type=click.Path(dir_okay=False), required=False)
@click.option("--data", "data", required=True, multiple=True, help="Dataset folder(s): DIR[,DIR...].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write overall, per-domain and per-frame results to this JSON file.")
@click.option("--limit", type=int, default=None, help="At most this many frames per dataset.")
@click.option("--batch-size", "batch_size", type=int, default=16, show_default=True, help="Inference batch.")
@click.option("--teacher", default=None,
              help="Score a teacher instead of MODEL (.pt, .onnx, hf:ORG/NAME, save_pretrained folder); a "
                   "relative teacher is aligned to each frame's ground truth (scale and shift) first.")
@teacher_options
def eval_cmd(model, data, json_out, limit, batch_size, teacher, **teacher_kw) -> None:
    """Evaluate MODEL (.pt checkpoint or .onnx) on datasets: AbsRel, SqRel, RMSE, RMSE-log, deltas.

    Prints one row for all frames and one per domain (when meta.json names domains), and the
    Spearman correlation of per-frame mean uncertainty with per-frame AbsRel.
    """
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
    result = evaluate(model, split_dirs(list(data)), batch_size=batch_size, limit=limit)
    click.echo(result.table())
    click.echo(f"({len(result.frames)} frames in {result.seconds:.1f} s; depth in metres)")
    if json_out:
        click.echo(f"wrote {result.write_json(json_out)}")


def colourise(depth, min_depth: float, max_depth: float, colormap: str = "inferno"):
    """Depth (m) -> BGR uint8 image: near is bright, on a log scale over the model's range."""
    import cv2
    import numpy as np

    lo, hi = np.log(min_depth), np.log(max_depth)
    d = np.clip(depth, min_depth, max_depth)
    finite = d[np.isfinite(d)]
    if finite.size:  # stretch to the frame's own range so the picture shows structure
        lo, hi = np.log(np.percentile(finite, 1)), np.log(np.percentile(finite, 99))
        hi = max(hi, lo + 1e-3)
    v = 1.0 - (np.log(d) - lo) / (hi - lo)
    img = np.clip(v * 255.0, 0, 255).astype(np.uint8)
    cmap = {"inferno": cv2.COLORMAP_INFERNO, "turbo": cv2.COLORMAP_TURBO, "viridis": cv2.COLORMAP_VIRIDIS}
    return cv2.applyColorMap(img, cmap[colormap])


@click.command("predict")
@click.option("--model", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint (.pt) or ONNX file.")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--colormap", default="inferno", show_default=True, type=click.Choice(COLORMAPS),
              help="Colour map of the preview PNG.")
def predict(model, images, out, colormap) -> None:
    """Predict metric depth for IMAGE files of any size.

    Writes, per image, into --out: NAME.depth.png (uint16 millimetres), NAME.depth.npy (float32
    metres) and NAME.color.png (colourised preview), all at the image's own size.
    """
    import cv2
    import numpy as np

    from edgedepth.predictor import Predictor

    for img in images:
        if not Path(img).is_file():
            raise DataError(f"image {img} does not exist")
    predictor = Predictor(model)
    pre = predictor.preprocessing
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for img in images:
        bgr = cv2.imread(str(img), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"cannot decode image {img}; use PNG or JPEG")
        pred = predictor.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        stem = out_dir / Path(img).stem
        mm = np.clip(np.round(pred.depth * 1000.0), 0, 65535).astype(np.uint16)
        cv2.imwrite(f"{stem}.depth.png", mm)
        np.save(f"{stem}.depth.npy", pred.depth.astype(np.float32))
        cv2.imwrite(f"{stem}.color.png", colourise(pred.depth, pre.min_depth, pre.max_depth, colormap))
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
