"""`edgedepth round build`: ingested frames -> the next training round (a folder the trainer reads)."""

from __future__ import annotations

from typing import Optional

import click

from edgedepth.cli.options import OutputPath
from edgedepth.cli.teacher import teacher_options


@click.group("round")
def round_group() -> None:
    """Build next-round datasets from what the fleet uploaded."""


@round_group.command("build")
@click.option("--store", required=True, help="Ingest store: a directory (or file://DIR) or s3://BUCKET/PREFIX.")
@click.option("--endpoint-url", default=None, help="S3-compatible endpoint (MinIO, ...); s3:// stores only.")
@click.option("--since", default=None,
              help="Only items received after this ISO 8601 UTC time, e.g. 2026-11-24T18:00:00Z "
                   "(default: everything in the store).")
@click.option("--out", required=True, type=OutputPath(file_okay=False),
              help="New round folder (must not exist or be empty), e.g. rounds/3.")
@click.option("--teacher", default=None,
              help="Bigger model that pseudo-labels frames uploaded without depth: a .pt checkpoint, an "
                   ".onnx depth model, hf:ORG/NAME or a save_pretrained folder "
                   "(see `edgedepth teacher check`).")
@teacher_options
@click.option("--camera-height", "camera_height", type=float, default=None,
              help="Metres from the camera to the floor: ground-plane metric points that align a relative "
                   "teacher on frames uploaded with intrinsics (default: camera.height_m of "
                   "--device-config).")
@click.option("--device-config", "device_config", default=None,
              help="Device config (name or YAML) whose camera.height_m gives the camera height.")
@click.option("--self-supervised", "self_supervised", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="Experimental: label frames uploaded with neighbour frames and camera poses (run "
                   "--neighbors K on a posed source) by refining this model's prediction (the current "
                   ".pt or .onnx) photometrically against the neighbours.")
@click.option("--replay", default=None,
              help="Earlier round / dataset folders to mix in, DIR[,DIR...] (their train side).")
@click.option("--replay-fraction", default=0.3, show_default=True, type=float,
              help="Replay frames as a fraction of the new training frames.")
@click.option("--val-fraction", default=0.2, show_default=True, type=float,
              help="Share of the new frames held out for validation (whole device/time groups).")
@click.option("--time-block", "time_block_s", default=600.0, show_default=True, type=float,
              help="Seconds: frames of one device within one block always land on the same side.")
@click.option("--dedupe-distance", default=0.1, show_default=True, type=float,
              help="Frames whose 16x16 grey thumbnails (normalised for brightness and contrast) differ by "
                   "less than this (mean abs z-score) are near-duplicates; the higher-scored one is kept. "
                   "0 turns de-duplication off.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the split and replay sample.")
@click.option("--ray", "ray_address", default=None,
              help="Run the embedding and labelling steps on a Ray cluster (ray://HEAD:10001, auto, or local "
                   "to start one here); needs the `scale` extra. See docs/scaling.md.")
@click.option("--ray-workers", default=2, show_default=True, type=int, help="Ray Data workers per step.")
@click.option("--ray-gpus", default=0.0, show_default=True, type=float,
              help="GPUs per labelling worker (teacher pseudo-labels on GPU workers).")
def build(store: str, endpoint_url: Optional[str], since: Optional[str], out: str, teacher: Optional[str],
          self_supervised: Optional[str], replay: Optional[str], replay_fraction: float, val_fraction: float,
          time_block_s: float, dedupe_distance: float, seed: int, camera_height: Optional[float],
          device_config: Optional[str], ray_address: Optional[str] = None, ray_workers: int = 2,
          ray_gpus: float = 0.0, **teacher_kw) -> None:
    """Collect ingested frames into OUT: train split at OUT (rgb/, depth/, meta.json), val split in
    OUT/val, lineage in OUT/lineage.json.

    Labels, in order of availability: depth uploaded with the frame (synthetic ground truth or an
    RGB-D sensor), else a pseudo-label from --teacher, else (experimental, --self-supervised) depth
    refined photometrically against the neighbour frames uploaded with it; frames with none of these
    are counted as unlabelled and left out.

    Retrain on it with: edgedepth train --init-from CURRENT.pt --data rounds/0,...,OUT --val OUT/val ...
    """
    from edgedepth.cli.teacher import teacher_option_values
    from edgedepth.rounds.build import RoundConfig, build_round
    from edgedepth.train.config import split_dirs

    if camera_height is None and device_config:
        from edgedepth.devices import load_device

        camera_height = load_device(device_config).camera.height_m
    cfg = RoundConfig(store=store, out=out, since=since, teacher=teacher, self_supervised=self_supervised,
                      teacher_options=teacher_option_values(teacher_kw), camera_height=camera_height,
                      label_cache=teacher_kw.get("label_cache"),
                      replay=split_dirs(replay),
                      replay_fraction=replay_fraction, val_fraction=val_fraction, time_block_s=time_block_s,
                      dedupe_distance=dedupe_distance, seed=seed, endpoint_url=endpoint_url)
    if ray_address:
        from edgedepth.rounds.raysteps import build_round_ray

        report = build_round_ray(cfg, ray_address, workers=ray_workers, gpus_per_worker=ray_gpus)
    else:
        report = build_round(cfg)
    click.echo(report.summary())
    click.echo(f"lineage: {out}/lineage.json")


# `edgedepth round train`: defaults are the fleet simulation's recipe (edgedepth.rounds.finetune).

def _recipe_default(name: str):
    from edgedepth.rounds.finetune import FinetuneRecipe  # stdlib + sim config only: no torch

    return getattr(FinetuneRecipe, name)


@round_group.command("train")
@click.argument("round_dir", metavar="ROUND", type=click.Path(exists=True, file_okay=False))
@click.option("--from", "parent", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The model the fleet runs now (.pt); its lineage names the data it was trained on.")
@click.option("--out", required=True, type=OutputPath(file_okay=False),
              help="Run directory: last.pt, merged.pt (the candidate), round.json (recipe, data, verdict).")
@click.option("--base", default=None,
              help="Original training set(s) DIR[,DIR...] to replay whole (default: from --from's lineage).")
@click.option("--regression-set", default=None, type=click.Path(exists=True, file_okay=False),
              help="Gate set the candidate must not get worse on (default: the parent's validation set).")
@click.option("--target-set", "target_sets", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Gate set(s) that must improve (default: the val split of every round so far).")
@click.option("--merge-set", default=None, type=click.Path(exists=True, file_okay=False),
              help="Original-domain set that chooses the WiSE-FT merge weight (default: the regression set).")
@click.option("--protect-set", "protect_sets", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Set checked on its own by the merge and the gate (repeatable).")
@click.option("--steps", type=int, default=_recipe_default("steps"), show_default=True,
              help="Optimiser steps of the fine-tune.")
@click.option("--minutes", type=float, default=None, help="Wall-clock budget instead of --steps.")
@click.option("--lr", type=float, default=_recipe_default("lr"), show_default=True,
              help="Peak learning rate of the fine-tune.")
@click.option("--batch-size", type=int, default=_recipe_default("batch_size"), show_default=True)
@click.option("--new-share", type=float, default=_recipe_default("new_share"), show_default=True,
              help="Share of every batch drawn from the rounds' new frames; the rest replays the base "
                   "set (0: every frame equally likely).")
@click.option("--freeze-bn/--train-bn", "freeze_bn", default=_recipe_default("freeze_bn"), show_default=True,
              help="Keep BatchNorm running statistics frozen.")
@click.option("--freeze", default=_recipe_default("freeze"), show_default=True,
              type=click.Choice(["none", "encoder", "stem"]), help="Parts of the network not trained.")
@click.option("--l2sp", type=float, default=_recipe_default("l2sp"), show_default=True,
              help="L2-SP weight towards the parent's weights.")
@click.option("--ema", "ema_decay", type=float, default=_recipe_default("ema_decay"), show_default=True,
              help="EMA decay of the weights (0 = off).")
@click.option("--merge", default=_recipe_default("merge"), show_default=True,
              type=click.Choice(["none", "wise"]),
              help="wise: WiSE-FT-merge the fine-tune towards the parent as far as --merge-set needs.")
@click.option("--merge-margin", type=float, default=_recipe_default("merge_margin"), show_default=True,
              help="Fraction of the gate tolerance the merge may spend.")
@click.option("--tolerance", type=float, default=_recipe_default("tolerance"), show_default=True,
              help="Gate: largest relative worsening of AbsRel and d1 on the regression set.")
@click.option("--min-gain", type=float, default=_recipe_default("min_gain"), show_default=True,
              help="Gate: relative AbsRel improvement the target set must exceed.")
@click.option("--target-all-rounds/--target-this-round", "target_all_rounds",
              default=_recipe_default("target_all_rounds"), show_default=True,
              help="Gate target: the val splits of every round so far, or of this round only.")
@click.option("--protect-rounds/--no-protect-rounds", "protect_rounds",
              default=_recipe_default("protect_rounds"), show_default=True,
              help="Check each earlier round's val split on its own (merge and gate).")
@click.option("--protect-tolerance", type=float, default=_recipe_default("protect_tolerance"),
              show_default=True, help="Largest relative worsening on each protected set.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--workers", type=int, default=2, show_default=True, help="Dataset decoding threads.")
@click.option("--threads", type=int, default=None, help="torch threads (default: all cores).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train_round_cmd(round_dir: str, parent: str, out: str, base: Optional[str], regression_set: Optional[str],
                    target_sets, merge_set: Optional[str], protect_sets, seed: int, device: str, workers: int,
                    threads: Optional[int], no_progress: bool, **recipe) -> None:
    """Fine-tune the current model (--from) on ROUND with the recipe that keeps what it knew, then gate it.

    Trains on the parent's whole training set (from its lineage) plus every round so far, the new frames
    at a fixed share of each batch, BatchNorm statistics frozen, a fine-tune learning rate and step budget;
    validates on the gate's sets; merges back towards the parent as far as the regression set needs; ends
    with the gate's verdict (exit status 2 when refused). Every choice is recorded in the candidate's
    lineage. See docs/rounds.md.
    """
    from edgedepth.gate import enforce
    from edgedepth.rounds.finetune import FinetuneRecipe, train_round
    from edgedepth.train.config import split_dirs
    from edgedepth.train.openmp import choose_wait_policy

    choose_wait_policy()
    result = train_round(round_dir, parent, out, FinetuneRecipe(**recipe), base=split_dirs(base),
                         regression_set=regression_set, target_sets=list(target_sets), merge_set=merge_set,
                         protect_sets=list(protect_sets), seed=seed, device=device, workers=workers,
                         threads=threads, progress=not no_progress, say=click.echo)
    click.echo(result.gate.table())
    click.echo(f"candidate: {result.candidate}  record: {result.out / 'round.json'}")
    enforce(result.gate)
