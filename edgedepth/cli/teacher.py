"""`edgedepth teacher check MODEL` and the --teacher options shared by train, eval and round build."""

from __future__ import annotations

from typing import Optional

import click

from edgedepth.errors import ConfigError
from edgedepth.sizes import parse_size

OUTPUT_CHOICES = ("metric", "relative", "disparity")


def _triple(text: Optional[str], name: str):
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise ConfigError(f"--teacher-{name} must be three comma-separated numbers, got {text!r}") from exc
    if len(vals) != 3:
        raise ConfigError(f"--teacher-{name} must be three comma-separated numbers, got {text!r}")
    return vals


def _size(text: Optional[str]):
    if text is None:
        return None
    try:
        return parse_size(text, what="--teacher-size")
    except ConfigError as exc:
        raise ConfigError(f"--teacher-size must be HEIGHTxWIDTH, e.g. 518x518, got {text!r}") from exc


def teacher_options(func):
    """The options that describe a teacher (all optional: detected from the model where possible)."""
    opts = [
        click.option("--teacher-output", "teacher_output", default=None, type=click.Choice(OUTPUT_CHOICES),
                     help="What the teacher outputs: metric depth, relative depth, or disparity (relative "
                          "inverse depth). Default: from the model's metadata/config."),
        click.option("--teacher-size", "teacher_size", default=None,
                     help="Teacher input HEIGHTxWIDTH (default: fixed input shape, metadata, or the image "
                          "aspect with short side 518)."),
        click.option("--teacher-multiple", "teacher_multiple", default=None, type=int,
                     help="Teacher input sides are multiples of this (default: metadata, else 14 for "
                          "dynamic-shape ONNX models, the ViT patch size)."),
        click.option("--teacher-mean", "teacher_mean", default=None, help="Normalisation mean R,G,B (0..1)."),
        click.option("--teacher-std", "teacher_std", default=None, help="Normalisation std R,G,B (0..1)."),
        click.option("--teacher-device", "teacher_device", default="auto", show_default=True,
                     type=click.Choice(["auto", "cpu", "cuda"]), help="Where the teacher runs."),
        click.option("--teacher-batch", "teacher_batch", default=8, show_default=True, type=int,
                     help="Frames per teacher batch."),
        click.option("--label-cache", "label_cache", default=None, type=click.Path(file_okay=False),
                     help="Teacher-output cache folder (default: $EDGEDEPTH_CACHE/teacher-labels or "
                          "~/.cache/edgedepth/teacher-labels)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


TEACHER_KWARGS = ("teacher_output", "teacher_size", "teacher_multiple", "teacher_mean", "teacher_std",
                  "teacher_device", "teacher_batch", "label_cache")


def teacher_option_values(kw: dict) -> dict:
    """TeacherOptions fields from the --teacher-* options."""
    return dict(output=kw.get("teacher_output"), size=_size(kw.get("teacher_size")),
                multiple=kw.get("teacher_multiple"), mean=_triple(kw.get("teacher_mean"), "mean"),
                std=_triple(kw.get("teacher_std"), "std"), device=kw.get("teacher_device") or "auto",
                batch_size=kw.get("teacher_batch") or 8)


def open_from_options(spec: str, kw: dict):
    """(teacher, cache) from the --teacher-* options."""
    from edgedepth.teachers import LabelCache, TeacherOptions, open_teacher

    return open_teacher(spec, TeacherOptions(**teacher_option_values(kw))), LabelCache(kw.get("label_cache"))


@click.group("teacher")
def teacher_group() -> None:
    """Inspect the teacher models that label frames for distillation."""


@teacher_group.command("check")
@click.argument("model")
@teacher_options
@click.option("--image", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Run on this image (default: a synthetic indoor frame).")
def check(model: str, image: Optional[str], **kw) -> None:
    """Print what MODEL (.pt, .onnx, hf:ORG/NAME or a save_pretrained folder) was detected as, then run
    it on one frame and print the output's range."""
    import time

    import numpy as np

    teacher, _ = open_from_options(model, kw)
    for k, v in teacher.describe().items():
        click.echo(f"{k:>14}: {v}")
    if image:
        from edgedepth.data.formats import read_rgb

        rgb = read_rgb(image)
    else:
        from edgedepth.data.synth import render_frame

        rgb = render_frame("indoor", 0, 192, 256).rgb
    t0 = time.monotonic()
    out = teacher(rgb)
    dt = time.monotonic() - t0
    good = out[np.isfinite(out)]
    unit = "m" if teacher.kind == "metric" else "(no metric scale)"
    click.echo(f"{'one frame':>14}: {rgb.shape[1]}x{rgb.shape[0]} -> output {out.shape[1]}x{out.shape[0]} "
               f"{float(good.min()):.4g}..{float(good.max()):.4g} {unit}, median {float(np.median(good)):.4g}"
               f" ({dt:.2f} s)")
