#!/usr/bin/env python
"""Scaling study: learned depth model vs the classical two-view baseline against training-set size.

    python scripts/scaling_study.py --out runs/scaling            # full: 2^5..2^12 frames, 2 seeds (~30 min)
    python scripts/scaling_study.py --out runs/scaling-quick --quick   # plumbing check (~1-2 min)

Compute rule (--rule): "fixed" (default) gives every run the same number of optimisation steps
(--steps, batch --batch-size) spread over about --epochs epochs: a small set is repeated within an
epoch, a set larger than the budget gets one epoch (4096 frames = 256 steps of 16 = one epoch).
"proportional" gives --epochs epochs of the set, at least --steps and at most --max-steps (bigger
sets get more compute too, as when a model is trained to convergence on each set).
Everything (training, validation and the held-out test sequences) is rendered at --render-size;
the network sees it resized to --input-size, the classical method at full resolution. Both are
scored with edgedepth.metrics on the same frames, pixels and depth range.

Writes OUT/scaling.json, OUT/scaling.csv, OUT/scaling.png; prints the table, the crossover and the
wall time. An interrupted study resumes from OUT/runs/*/result.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def _ints(text: str):
    return [int(v) for v in text.split(",") if v.strip()]


def _size(text: str):
    h, w = text.lower().split("x")
    return int(h), int(w)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/scaling", help="output folder (data, runs, table, plot)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny study: 8..32 frames, 1 seed, few steps, tiny model")
    ap.add_argument("--sizes", type=_ints, default=None,
                    help="training-set sizes, e.g. 32,64,128 (default 2^5..2^12)")
    ap.add_argument("--seeds", type=_ints, default=None, help="training seeds, e.g. 0,1")
    ap.add_argument("--rule", choices=["fixed", "proportional"], default=None,
                    help="compute rule: fixed = --steps at every size (default); proportional = --epochs "
                         "epochs of the set, at least --steps, at most --max-steps")
    ap.add_argument("--steps", type=int, default=None, help="optimisation steps per run (default 256)")
    ap.add_argument("--max-steps", type=int, default=None, help="cap of the proportional rule (default 1024)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs the steps are spread over (default 4)")
    ap.add_argument("--batch-size", type=int, default=None, help="batch size (default 16)")
    ap.add_argument("--model", default=None, help="model size: tiny | small | base (default small)")
    ap.add_argument("--input-size", type=_size, default=None, help="network input HxW (default 96x128)")
    ap.add_argument("--render-size", type=_size, default=None, help="rendered frames HxW (default 192x256)")
    ap.add_argument("--domain", default=None, help="synthetic domain (default indoor)")
    ap.add_argument("--test-frames", type=int, default=None, help="held-out sequence frames (default 120)")
    ap.add_argument("--test-sequences", type=int, default=None,
                    help="held-out sequences (scenes) the test frames are split into (default 8)")
    ap.add_argument("--val-frames", type=int, default=None, help="validation frames (default 64)")
    ap.add_argument("--gap", type=int, default=None, help="classical pair gap in frames (default 6)")
    ap.add_argument("--max-depth", type=float, default=None,
                    help="depth range upper bound, metres (default 40)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per training run (default 1)")
    ap.add_argument("--render-workers", type=int, default=None, help="rendering processes (default 2)")
    ap.add_argument("--trainer", choices=["auto", "library", "cli"], default="auto",
                    help="train in-process (library) or through `edgedepth train` (cli)")
    ap.add_argument("--plot", default=None, help="also copy the plot here (e.g. docs/scaling-study.png)")
    ap.add_argument("--record", default=None,
                    help="folder for the result record (scaling_proportional.json, or scaling_study.json for "
                         "the fixed rule; e.g. docs/results; default: $EDGEDEPTH_RESULTS, else none)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("edgedepth.train").setLevel(logging.WARNING)

    from edgedepth.bench.scaling import (
        StudyConfig,
        cli_trainer,
        default_trainer,
        format_summary,
        library_trainer,
        run_study,
    )

    base = dict(out_dir=args.out, render_size=(192, 256))
    if args.quick:
        base.update(sizes=[8, 16, 32], seeds=[0], steps=8, epochs=2, batch_size=8, model="tiny",
                    input_size=(64, 96), render_size=(144, 192), test_frames=24, test_sequences=2,
                    val_frames=8, gap=6)
    overrides = dict(sizes=args.sizes, seeds=args.seeds, rule=args.rule, steps=args.steps,
                     max_steps=args.max_steps, epochs=args.epochs,
                     batch_size=args.batch_size, model=args.model, input_size=args.input_size,
                     render_size=args.render_size, domain=args.domain, test_frames=args.test_frames,
                     test_sequences=args.test_sequences,
                     val_frames=args.val_frames, gap=args.gap, max_depth=args.max_depth, threads=args.threads,
                     render_workers=args.render_workers)
    base.update({k: v for k, v in overrides.items() if v is not None})
    cfg = StudyConfig(**base)
    trainer = {"auto": default_trainer(), "library": library_trainer, "cli": cli_trainer}[args.trainer]

    t0 = time.perf_counter()
    result = run_study(cfg, trainer=trainer, progress=lambda msg: print(msg, flush=True))
    wall = time.perf_counter() - t0
    print()
    print(format_summary(result))
    w = result["wall_seconds"]
    print(f"\nwall time {wall:.0f} s (data {w['data']:.0f} s, classical {w['classical']:.0f} s, "
          f"training+eval {w['training_and_eval']:.0f} s); compute rule: {result['config']['compute_rule']}")
    out = Path(cfg.out_dir)
    print(f"wrote {out / 'scaling.json'}, {out / 'scaling.csv'}, {out / 'scaling.png'}")
    (out / "wall_time.json").write_text(json.dumps({"wall_seconds": wall, **w}, indent=1))
    if args.plot:
        import shutil

        shutil.copyfile(out / "scaling.png", args.plot)
        print(f"plot copied to {args.plot}")
    from edgedepth.bench.scaling_fit import study_record

    path = study_record(result, Path(args.record) if args.record else None)  # else $EDGEDEPTH_RESULTS
    if path is not None:
        print(f"recorded {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
