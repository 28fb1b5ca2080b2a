"""`edgedepth train`: train, fine-tune or resume a depth network (torch is imported only when it runs)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgedepth.cli.options import InputPath, OutputPath, Size
from edgedepth.cli.teacher import teacher_options
from edgedepth.errors import ConfigError
from edgedepth.train.config import TrainConfig, existing_run  # stdlib only: no torch at import


@click.command("train")
@click.option("--data", "data", required=True, multiple=True,
              help="Training dataset spec(s): folder, NYU .mat, KITTI folder (optionally nyu:/kitti:/"
                   "folder:), SPEC[,SPEC...] (repeatable).")
@click.option("--val", "val", multiple=True,
              help="Validation dataset spec(s); default: hold out 5% of the training frames.")
@click.option("--model", "model", default="small", show_default=True,
              type=click.Choice(["tiny", "small", "base"]), help="Model size (ignored with --init-from).")
@click.option("--size", default="96x128", show_default=True, type=Size(multiple_of=32),
              help="Network input HEIGHTxWIDTH, multiples of 32 (ignored with --init-from).")
@click.option("--epochs", type=int, default=None, help="Train for N epochs (reproducible on CPU).")
@click.option("--minutes", type=float, default=None,
              help="Wall-clock budget for the whole run; the LR schedule is planned against it.")
@click.option("--out", required=True, type=OutputPath(file_okay=False),
              help="Run directory: best.pt, last.pt, curves.png, run.json.")
@click.option("--init-from", "init_from", type=InputPath(dir_okay=False), default=None,
              help="Fine-tune from this checkpoint (keeps its model config and preprocessing).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--force", is_flag=True, help="Start over in an --out folder that holds a run (overwrites it).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--batch-size", "batch_size", type=int, default=16, show_default=True,
              help="Batch size per process.")
@click.option("--lr", type=float, default=4e-3, show_default=True, help="Peak learning rate (AdamW).")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Threads that decode the datasets into memory.")
@click.option("--grad-weight", "grad_weight", type=float, default=0.5, show_default=True,
              help="Weight of the scale-invariant gradient loss (0 turns it off).")
@click.option("--loss-mode", "loss_mode", default="nll", show_default=True,
              type=click.Choice(["nll", "decoupled"]),
              help="nll: Laplacian NLL trains depth and uncertainty; decoupled: L1 on log-depth trains "
                   "depth and the NLL (error detached) trains the uncertainty.")
@click.option("--frame-weight", "frame_weight", type=float, default=TrainConfig.frame_weight,
              show_default=True,
              help="Weight of the per-frame uncertainty term, which trains each frame's mean predicted "
                   "uncertainty towards its error (what hard-frame selection ranks by); 0 turns it off.")
@click.option("--min-depth", "min_depth", type=float, default=0.1, show_default=True,
              help="Smallest depth the network can output [m].")
@click.option("--max-depth", "max_depth", type=float, default=40.0, show_default=True,
              help="Largest depth the network can output [m].")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where to train.")
@click.option("--freeze-bn", "freeze_bn", is_flag=True,
              help="Keep BatchNorm statistics frozen (fine-tuning on a few new frames).")
@click.option("--l2sp", type=float, default=0.0, show_default=True,
              help="L2-SP weight: pull the weights towards --init-from's (less forgetting).")
@click.option("--freeze", default="none", show_default=True, type=click.Choice(["none", "encoder", "stem"]),
              help="Parts of the network not trained.")
@click.option("--ema", "ema_decay", type=float, default=0.0, show_default=True,
              help="Keep an exponential moving average of the weights with this decay (e.g. 0.99); "
                   "validation and checkpoints use the average. 0 = off.")
@click.option("--zoom", type=float, default=0.0, show_default=True,
              help="Metric-consistent zoom augmentation: half the frames are magnified up to 1 + ZOOM and "
                   "their depth divided by the same factor (e.g. 0.25). 0 = off.")
@click.option("--data-shares", "data_shares", default=None,
              help="Share of every batch drawn from each --data directory, e.g. 0.75,0.25 (old training set, "
                   "new round): keeps the old data in play without drowning a few new frames.")
@click.option("--merge-set", "merge_set", type=InputPath(file_okay=False), default=None,
              help="With --init-from: WiSE-FT-merge last.pt back towards the initial weights as far as this "
                   "original-domain set needs (AbsRel/d1 within --merge-tolerance); writes merged.pt.")
@click.option("--merge-tolerance", "merge_tolerance", type=float, default=0.02, show_default=True,
              help="Relative regression the merge may allow on --merge-set (use the gate's tolerance).")
@click.option("--merge-protect", "merge_protect", multiple=True,
              type=click.Path(exists=True, file_okay=False),
              help="With --merge-set: a set (repeatable) the merge must also keep within "
                   "--merge-protect-tolerance, e.g. the gate's --protect-set folders.")
@click.option("--merge-protect-tolerance", "merge_protect_tolerance", type=float, default=0.10,
              show_default=True, help="Relative regression the merge may allow on each --merge-protect set.")
@click.option("--tensorboard", type=click.Path(file_okay=False), default=None,
              help="Also write TensorBoard event files here (loss, metrics per domain, uncertainty "
                   "ranking per epoch); view with `tensorboard --logdir DIR`.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
@click.option("--teacher", default=None,
              help="Label the --data frames with this teacher first and train on its labels (distillation): "
                   "a .pt checkpoint, an .onnx depth model, hf:ORG/NAME or a save_pretrained folder.")
@teacher_options
@click.option("--target", default="metric", show_default=True, type=click.Choice(["metric", "relative"]),
              help="metric: a model in metres (a relative teacher needs metric points to align it); "
                   "relative: a scale-and-shift-invariant loss, the model is marked relative.")
@click.option("--camera-height", "camera_height", type=float, default=None,
              help="Metres from the camera to a flat floor (camera looking level): ground-plane metric "
                   "points for aligning a relative teacher (needs intrinsics in meta.json).")
@click.option("--two-view", "two_view", is_flag=True,
              help="Triangulate metric points from the frame 5 later (poses and intrinsics in meta.json, a "
                   "recorded sequence) to align a relative teacher.")
def train(data, val, model, size, epochs, minutes, out, init_from, resume, force, seed, batch_size, lr,
          workers, grad_weight, loss_mode, frame_weight, min_depth, max_depth, device, freeze_bn, l2sp,
          freeze, ema_decay, zoom, data_shares, merge_set, merge_tolerance, merge_protect,
          merge_protect_tolerance, no_progress, teacher, target, camera_height, two_view, tensorboard=None,
          **teacher_kw) -> None:
    """Train a depth network on folder datasets and write checkpoints (best.pt, last.pt) to --out.

    Loss: Laplacian NLL on log-depth with the network's uncertainty, plus a gradient term.
    Multi-GPU / multi-node: launch with `torchrun --nproc_per_node N -m edgedepth train ...`.
    """
    from edgedepth.train.openmp import choose_wait_policy

    choose_wait_policy()  # before torch loads libgomp: passive waiting only when the CPUs are busy

    try:
        shares = [float(v) for v in data_shares.split(",")] if data_shares else []
    except ValueError as exc:
        raise ConfigError(f"--data-shares must be comma-separated numbers, got {data_shares!r}") from exc

    # cheap refusals first: the teacher below labels all the data and replaces OUT/teacher-labels/N
    held = existing_run(out)
    if held is not None and not (resume or force):
        raise ConfigError(f"{out} already holds a training run ({held.name}): add --resume to continue it, "
                          "--force to start over in it, or choose another --out")
    if merge_set is not None and not init_from:
        raise ConfigError("--merge-set merges towards the initial weights: give --init-from")
    if merge_protect and merge_set is None:
        raise ConfigError("--merge-protect guards a merge: give --merge-set too")
    if loss_mode not in ("nll", "decoupled"):
        raise ConfigError(f"unknown loss mode {loss_mode!r}")

    data = list(data)
    if teacher:
        data = _teacher_labels(teacher, teacher_kw, data, out, target, camera_height, two_view, min_depth,
                               max_depth)
    elif camera_height is not None or two_view:
        raise ConfigError("--camera-height and --two-view align a relative teacher's labels: give --teacher")
    cfg = TrainConfig(data=list(data), val=list(val), out=out, model=model, size=size, epochs=epochs,
                      minutes=minutes, init_from=init_from, resume=resume, seed=seed, batch_size=batch_size,
                      lr=lr, workers=workers, grad_weight=grad_weight, loss_mode=loss_mode,
                      frame_weight=frame_weight, min_depth=min_depth, max_depth=max_depth, device=device,
                      progress=not no_progress, freeze_bn=freeze_bn, l2sp=l2sp, freeze=freeze,
                      ema_decay=ema_decay, zoom=zoom, data_shares=shares, target=target,
                      tensorboard=tensorboard)
    if tensorboard:
        from edgedepth.errors import require

        require("tensorboard", extra="train")  # fail now, not after the first epoch
    cfg.validate()  # clear errors before torch is imported
    if init_from and not resume and not shares and len(cfg.data) == 1:  # fine-tune on new frames alone
        click.echo("hint: fine-tuning on one data set without replay forgets what the model knew; "
                   "`edgedepth round train ROUND --from CHECKPOINT` replays its training data "
                   "(docs/rounds.md)", err=True)
    from edgedepth.train.loop import train as run_training

    try:
        result = run_training(cfg)
    except KeyboardInterrupt:
        last = Path(out) / "last.pt"
        if last.is_file():
            click.secho(f"interrupted: the last finished epoch is in {last}; continue with the same "
                        "command plus --resume", fg="red", err=True)
        else:
            click.secho(f"interrupted before the first epoch finished: {out} holds no last.pt to resume",
                        fg="red", err=True)
        sys.exit(130)
    if result.best_metrics:
        m = result.best_metrics
        click.echo(f"best epoch {result.best_epoch + 1}: AbsRel {m['abs_rel']:.4f}  d1 {m['d1']:.4f}  "
                   f"RMSE {m['rmse']:.3f} m  ({result.epochs_completed} epochs, {result.steps} steps, "
                   f"{result.elapsed_s:.0f} s, stopped: {result.stop_reason})")
        click.echo(f"checkpoints: {result.best_checkpoint}  {result.last_checkpoint}")
    if merge_set is not None:
        from edgedepth.train.merge import wise_merge

        merged = wise_merge(init_from, result.last_checkpoint, merge_set, Path(out) / "merged.pt",
                            tolerance=merge_tolerance, protect=list(merge_protect),
                            protect_tolerance=merge_protect_tolerance)
        click.echo(f"WiSE-FT merge: alpha {merged.alpha:.2f} (regression-set AbsRel <= "
                   f"{merged.limit_abs_rel:.4f}) -> {merged.checkpoint}")


def _teacher_labels(spec, teacher_kw, data, out, target, camera_height, two_view, min_depth, max_depth):
    """Label every --data folder with the teacher into OUT/teacher-labels/N; the folders to train on."""
    from pathlib import Path

    from edgedepth.cli.teacher import open_from_options
    from edgedepth.teachers.labels import LabelPolicy, TeacherLabeler, label_folder
    from edgedepth.train.config import split_dirs

    teacher, cache = open_from_options(spec, teacher_kw)
    policy = LabelPolicy(target=target, camera_height=camera_height, two_view=two_view,
                         min_depth=min_depth, max_depth=max_depth)
    labeler = TeacherLabeler(teacher, policy, cache)
    labelled = []
    for i, d in enumerate(split_dirs(data)):
        dst = Path(out) / "teacher-labels" / str(i)
        if dst.exists():
            import shutil

            shutil.rmtree(dst)
        rep = label_folder(labeler, d, dst)
        click.echo(f"teacher {teacher.source} ({teacher.kind}) labelled {d} -> {dst}: "
                   + ", ".join(f"{k} {v}" for k, v in sorted(rep.counts.items()))
                   + f" ({rep.computed} computed, {rep.cached} from the cache {cache.root}, "
                     f"{rep.seconds:.0f} s)")
        labelled.append(str(dst))
    return labelled
