#!/usr/bin/env python
"""The acceptance run of `edgedepth simulate`: 3 seeds x {hard, random, duplicate} x 2 rounds at an equal
upload budget; prints the table (mean ± sd over seeds), the acceptance checks, and where the plot/JSON are.

    python scripts/simulate.py [--workdir edgedepth-sim] [--seeds 0,1,2] [--quick]

Budget on a 2-core machine: ~4 min for the shared round-0 model (once; cached in WORKDIR/shared), then
~10 min per seed (measured: 1951 s for 3 seeds x 3 strategies x 2 rounds, 4 devices x 2500 frames).
Exit status 0 whether or not the targets are met: the figures are the result.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgedepth.cli.main import cli  # noqa: E402


def record(workdir: Path) -> None:
    """The run's acceptance checks and table as a benchmark record (see edgedepth.bench.record)."""
    import json

    from edgedepth.bench.record import figure, record_results
    from edgedepth.sim.report import acceptance, table

    path = workdir / "simulation.json"
    if not path.is_file():
        return
    result = json.loads(path.read_text())
    figs = [figure(name, "n/a" if m != m else f"{m * 100:+.1f} % ± {sd * 100:.1f} %",
                   target="met" if ok else ("not met" if ok is not None else ""))
            for name, m, sd, ok in acceptance(result)]
    record_results("simulate", "Fleet simulation: hard vs random vs duplicate uploads", figs,
                   notes=["```\n" + table(result) + "\n```"])


if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a.startswith("--workdir") for a in args):
        args = ["--workdir", "edgedepth-sim"] + args
    try:
        cli(["simulate"] + args, prog_name="scripts/simulate.py")
    except SystemExit as exc:
        if not exc.code:
            workdir = args[args.index("--workdir") + 1] if "--workdir" in args else \
                next(a.split("=", 1)[1] for a in args if a.startswith("--workdir="))
            record(Path(workdir))
        raise
