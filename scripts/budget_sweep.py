#!/usr/bin/env python
"""Data efficiency: the fleet simulation (`edgedepth simulate`) swept over the upload budget.

    python scripts/budget_sweep.py --workdir runs/budget-sweep --budgets 5,10,20,40 --seeds 9,10,11

Each (budget, seed) is one simulation of the hard and random strategies on the same fleet videos
(edgedepth.sim.sweep); the sweep plots shifted- and original-domain AbsRel of the deployed model after
the last round against the frames actually uploaded (mean ± sd over seeds), prints the table, how many
uploads hard selection needs to match random's result at the largest budget, and the bytes uploaded per
0.01 of shifted-domain AbsRel gained. Finished points are reused, so one process per seed can share a
work dir once the first has trained the shared round-0 model; `--report-only` then combines them.

The simulation's selection settings were designed on seeds 0-2 (and the trust rule checked on 3-5,
fresh-seed figures reported on 6-8): the sweep's seeds should be others.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _ints(text: str):
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="runs/budget-sweep", help="sweep folder (points, shared assets)")
    ap.add_argument("--budgets", type=_ints, default=[5, 10, 20, 40], help="uploads per device per round")
    ap.add_argument("--seeds", type=_ints, default=[9, 10, 11], help="fleet video seeds")
    ap.add_argument("--strategies", default="hard,random", help="strategies compared at every budget")
    ap.add_argument("--rounds", type=int, default=None, help="improvement rounds (simulation default 2)")
    ap.add_argument("--devices", type=int, default=None, help="devices (simulation default 4)")
    ap.add_argument("--frames", type=int, default=None, help="frames per device per round (default 2500)")
    ap.add_argument("--finetune-steps", type=int, default=None, help="steps per round (default 1200)")
    ap.add_argument("--quick", action="store_true", help="tiny plumbing run (the figures mean nothing)")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: combine the finished points of WORKDIR with this recipe")
    ap.add_argument("--plot", default=None, help="plot path (default WORKDIR/budget-sweep.png)")
    ap.add_argument("--record", default=None, help="folder for the result record <name>.json "
                                                   "(e.g. docs/results; default: none)")
    args = ap.parse_args(argv)

    from edgedepth.sim.config import SimConfig, quick_config
    from edgedepth.sim.sweep import (
        TABLE_COLUMNS,
        collect_points,
        format_table,
        match_random,
        plot_sweep,
        point_rows,
        run_sweep,
        summarise,
        table_rows,
    )

    overrides = {k: v for k, v in dict(rounds=args.rounds, devices=args.devices,
                                       frames_per_device=args.frames,
                                       finetune_steps=args.finetune_steps).items() if v is not None}
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    make = quick_config if args.quick else SimConfig
    base = make(workdir=args.workdir, strategies=strategies, progress=False, **overrides)
    if args.quick and not args.budgets:
        args.budgets = [2, 4]
    base.budget_per_device = max(args.budgets)
    base.validate()
    workdir = Path(args.workdir)
    if not args.report_only:
        run_sweep(base, args.budgets, args.seeds, say=lambda m: print(m, flush=True))
    results = [r for r in collect_points(workdir, base)
               if int(r["config"]["budget_per_device"]) in args.budgets
               and all(int(s) in args.seeds for s in r["config"]["seeds"])]
    if not results:
        print(f"no finished points in {workdir}/points with this recipe", file=sys.stderr)
        return 1
    rows = point_rows(results)
    summary = summarise(rows)
    match = match_random(summary, "shifted_abs_rel")
    match_orig = match_random(summary, "original_abs_rel")
    seeds = sorted({r["seed"] for r in rows})
    cfg = results[0]["config"]
    scale = (f"{len(seeds)} seed(s) {seeds}, {cfg['devices']} devices x "
             f"{cfg['frames_per_device']} frames/round, "
             f"{cfg['rounds']} round(s), {cfg['finetune_steps']} fine-tune steps/round, {cfg['model']} model "
             f"{cfg['size'][0]}x{cfg['size'][1]}")
    plot = plot_sweep(Path(args.plot or workdir / "budget-sweep.png"), rows, summary, match,
                      f"upload-budget sweep: {scale}")
    table = format_table(summary)
    print(f"\nround-0 model: shifted AbsRel {rows[0]['base_shifted_abs_rel']:.3f}, original "
          f"{rows[0]['base_original_abs_rel']:.3f}\nscale: {scale}\n")
    print(table)
    print(f"\nuploads to match random (shifted AbsRel): {match['note']}")
    print(f"uploads to match random (original AbsRel): {match_orig['note']}")
    print(f"plot: {plot}")
    if args.record:
        from edgedepth.bench.record import record_results

        figures = [{"figure": "hard uploads needed to match random's shifted-domain AbsRel at its largest "
                              "budget, as a share of random's uploads (goal <= 0.5)",
                    "value": "n/a (not reached)" if match.get("ratio") is None else round(match["ratio"], 3),
                    "target": "<= 0.5"},
                   {"figure": "the same, in frames", "value": match["note"]}]
        for s in summary:
            bpp = s["bytes_per_point"]
            figures.append({"figure": f"{s['strategy']}, budget {s['budget']}: MB uploaded per 0.01 of "
                                      f"shifted AbsRel gained",
                            "value": "n/a (no gain)" if bpp != bpp else round(bpp / 1e6, 4), "unit": "MB"})
        tab = {"title": f"deployed model after the last round, mean ± sd over seeds ({scale})",
               "columns": list(TABLE_COLUMNS), "rows": table_rows(summary)}
        notes = [f"scale: {scale}", "seeds used while designing the selector: 0-2 (and 3-5 for the trust "
                 "rule, 6-8 reported as fresh)"]
        title = "Data efficiency: AbsRel against frames uploaded, hard vs random"
        path = record_results("budget_sweep", title, figures, [tab], notes, out_dir=Path(args.record),
                              data={"rows": rows, "summary": summary, "match_shifted": match,
                                    "match_original": match_orig, "config": cfg})
        print(f"recorded {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
