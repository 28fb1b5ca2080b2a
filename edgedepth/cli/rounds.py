"""`edgedepth round build`: ingested frames -> the next training round (a folder the trainer reads)."""

from __future__ import annotations

from typing import Optional

import click

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
@click.option("--out", required=True, type=click.Path(file_okay=False),
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
def build(store: str, endpoint_url: Optional[str], since: Optional[str], out: str, teacher: Optional[str],
          self_supervised: Optional[str], replay: Optional[str], replay_fraction: float, val_fraction: float,
          time_block_s: float, dedupe_distance: float, seed: int, camera_height: Optional[float],
          device_config: Optional[str], **teacher_kw) -> None:
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
    report = build_round(cfg)
    click.echo(report.summary())
    click.echo(f"lineage: {out}/lineage.json")
