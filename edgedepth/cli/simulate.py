"""`edgedepth simulate`: a shifted fleet improved round by round under several upload strategies."""

from __future__ import annotations

import logging
from typing import Optional

import click

from edgedepth.cli.options import OutputPath
from edgedepth.sim.config import SimConfig as _Defaults  # a dataclass: its defaults are class attributes


@click.command("simulate")
@click.option("--workdir", default="edgedepth-sim", show_default=True, type=OutputPath(file_okay=False),
              help="Working directory (shared round-0 assets are cached in WORKDIR/shared and reused).")
@click.option("--seeds", default="0,1,2", show_default=True,
              help="Comma-separated seeds of the fleet videos.")
@click.option("--strategies", default="hard,random,duplicate", show_default=True,
              help="hard (the loop's selection), random (same budget), duplicate (copies of training data).")
@click.option("--rounds", type=int, default=None,
              help=f"Improvement rounds per strategy [{_Defaults.rounds}].")
@click.option("--devices", type=int, default=None, help=f"Simulated devices [{_Defaults.devices}].")
@click.option("--frames", "frames_per_device", type=int, default=None,
              help=f"Frames each device processes per round [{_Defaults.frames_per_device}].")
@click.option("--budget", "budget_per_device", type=int, default=None,
              help=f"Uploads per device per round, equal for every strategy [{_Defaults.budget_per_device}].")
@click.option("--finetune-steps", type=int, default=None,
              help=f"Optimiser steps per round [{_Defaults.finetune_steps}].")
@click.option("--base-epochs", type=int, default=None,
              help=f"Epochs of the shared round-0 model [{_Defaults.base_epochs}].")
@click.option("--model", type=click.Choice(["tiny", "small", "base"]), default=None,
              help=f"Model size [{_Defaults.model}].")
@click.option("--threads", type=int, default=None, help=f"torch threads for training [{_Defaults.threads}].")
@click.option("--daemon", type=click.Choice(["inprocess", "subprocess"]), default=None,
              help=f"Run the upload daemon in-process or as `edgedepth upload --once` [{_Defaults.daemon}].")
@click.option("--label-source", "label_source", type=click.Choice(["ground-truth", "teacher"]), default=None,
              help="Labels of the uploaded frames: their synthetic ground truth, or --teacher's "
                   f"pseudo-labels (the uploaded depth ignored) [{_Defaults.label_source}].")
@click.option("--teacher", default=None, help="The teacher of --label-source teacher (any teacher spec).")
@click.option("--quick", is_flag=True, help="A tiny run of every stage (seconds; the figures mean nothing).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def simulate(workdir: str, seeds: str, strategies: str, rounds: Optional[int], devices: Optional[int],
             frames_per_device: Optional[int], budget_per_device: Optional[int],
             finetune_steps: Optional[int], base_epochs: Optional[int], model: Optional[str],
             threads: Optional[int], daemon: Optional[str], label_source: Optional[str],
             teacher: Optional[str], quick: bool, no_progress: bool) -> None:
    """Prove (or disprove) that uploading hard frames beats random ones and copy-paste at an equal budget.

    K devices run the real live loop on synthetic videos whose domain mix has shifted (the round-0 model
    saw only indoor daylight; the fleet sees 80% indoor plus night, fog and outdoor), upload through the
    real daemon to a local ingest server, and each round is built, fine-tuned, gated, published and
    picked up by the devices. Prints a table (mean ± sd over seeds) and writes WORKDIR/simulation.json
    and WORKDIR/simulation.png.
    """
    from dataclasses import replace

    from edgedepth.errors import ConfigError
    from edgedepth.sim.config import SimConfig, quick_config
    from edgedepth.sim.report import acceptance_text, table
    from edgedepth.sim.simulate import run_simulation

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError as exc:
        raise ConfigError(f"--seeds must be comma-separated integers, got {seeds!r}") from exc
    base = quick_config(seeds=seed_list[:1]) if quick else SimConfig(seeds=seed_list)
    overrides = {k: v for k, v in dict(rounds=rounds, devices=devices, frames_per_device=frames_per_device,
                                       budget_per_device=budget_per_device, finetune_steps=finetune_steps,
                                       base_epochs=base_epochs, model=model, threads=threads,
                                       daemon=daemon, label_source=label_source,
                                       teacher=teacher).items() if v is not None}
    cfg = replace(base, workdir=workdir, strategies=[s.strip() for s in strategies.split(",") if s.strip()],
                  progress=not no_progress, **overrides)
    if not (click.get_current_context().find_root().obj or {}).get("verbose"):
        # warnings from every stage would drown the table; -v shows them
        logging.getLogger("edgedepth").setLevel(logging.ERROR)
    result = run_simulation(cfg, say=lambda line: click.echo(line, err=True))
    click.echo(table(result))
    click.echo("acceptance (last round, mean ± sd over seeds):")
    click.echo(acceptance_text(result))
    click.echo(f"plot: {result['plot']}")
    click.echo(f"json: {cfg.workdir}/simulation.json")
    click.echo(f"total time: {result['timings']['total_s']:.0f} s")
