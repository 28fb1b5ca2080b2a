"""`edgedepth demo`: the README's main command - the whole improvement loop once, on built-in defaults."""

from __future__ import annotations

import logging

import click

from edgedepth.cli.options import OutputPath


@click.command("demo")
@click.option("--workdir", default="edgedepth-demo", show_default=True, type=OutputPath(file_okay=False),
              help="Where everything is written (data, models, bundles, registry, store, plot). The round-0 "
                   "model is cached under WORKDIR/shared and reused by the next run.")
@click.option("--quick", is_flag=True,
              help="A tiny run of every stage (under a minute; the figures mean nothing).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def demo(workdir: str, quick: bool, no_progress: bool) -> None:
    """Synthesise -> train -> export -> calibrate -> run the loop on synthetic cameras (headless) ->
    select hard frames -> upload through the daemon to a local ingest server -> build the next round ->
    retrain -> gate -> publish -> the devices update.

    Ends with accuracy before/after on the shifted and the original domain, fleet fps, frames selected
    and uploaded, the plot's path and the total time.
    """
    from dataclasses import replace

    from edgedepth.sim.demo import demo_config, run_demo, summary_table

    cfg = demo_config(workdir, quick)
    cfg = replace(cfg, progress=not no_progress and not quick)
    if not (click.get_current_context().find_root().obj or {}).get("verbose"):
        logging.getLogger("edgedepth").setLevel(logging.ERROR)  # stage lines and bars tell the story
    result = run_demo(cfg, say=lambda line: click.echo(line, err=True))
    click.echo("")
    click.echo("edgedepth demo summary")
    click.echo(summary_table(result))
    click.echo(f"plot: {result['plot']}")
    click.echo(f"details: {workdir}/demo.json")
    click.echo(f"total time: {result['total_s']:.0f} s")
