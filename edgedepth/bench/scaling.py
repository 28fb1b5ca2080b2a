"""Does the learned model improve with data while the classical pipeline stays flat? Measured.

The study trains the learned model on 2^k frames (nested subsets of one rendered set), every run with
the same optimisation budget (about `steps` steps of `batch_size`: small sets are seen for more
epochs, which adds no information, only repetitions), scores each run and the classical two-view
baseline on the same held-out synthetic sequence frames with the same metrics and depth range, and
finds the crossover: the smallest training-set size from which the learned model stays better.

The trainer is a parameter (`Trainer`: TrainJob -> TrainedModel) so tests can run the plumbing with
a fake one; `library_trainer` uses edgedepth.train in-process, `cli_trainer` the `edgedepth train`
command.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgedepth.bench.scaling_fit import HIGHER_IS_BETTER, study_fits
from edgedepth.errors import ConfigError
from edgedepth.fsutil import try_lock, write_bytes_atomic
from edgedepth.metrics import METRIC_NAMES, frame_metrics, mean_metrics

log = logging.getLogger(__name__)



# ------------------------------------------------------------------------------------ crossover
@dataclass
class Crossover:
    """Where a learned curve overtakes a flat baseline, in training frames (interpolated in log2)."""

    metric: str
    baseline: float
    frames: Optional[float]  # None: the learned model is not better from any size on within the study
    kind: str  # "interpolated" | "at_or_below_smallest" | "never" | "no_baseline"
    note: str

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def crossover(sizes: Sequence[float], learned: Sequence[float], baseline: float, metric: str) -> Crossover:
    """The smallest size from which the learned model beats the baseline at every larger size.

    Between the last size where it does not and the first where it does (and keeps doing so), the
    crossing is found by linear interpolation of the metric against log2(size).
    """
    if metric not in HIGHER_IS_BETTER:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(HIGHER_IS_BETTER)}")
    if len(sizes) != len(learned) or not len(sizes):
        raise ConfigError("crossover needs one learned value per training-set size")
    order = np.argsort(sizes)
    x = np.log2(np.asarray(sizes, np.float64)[order])
    y = np.asarray(learned, np.float64)[order]
    if not np.isfinite(baseline):
        return Crossover(metric, baseline, None, "no_baseline",
                         "the classical baseline predicted no pixel on the test set: no number to cross")
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    beats = sign * (y - baseline) > 0
    n = len(x)
    first = n
    while first > 0 and beats[first - 1]:
        first -= 1  # beats[first:] is the final run of sizes where the learned model is better
    size_txt = lambda v: f"{v:.0f}"  # noqa: E731
    if first == n:
        return Crossover(metric, baseline, None, "never",
                         f"learned {metric} {y[-1]:.4f} at {size_txt(2 ** x[-1])} frames does not beat the "
                         f"classical {baseline:.4f}: no crossover within {size_txt(2 ** x[-1])} frames")
    if first == 0:
        return Crossover(metric, baseline, float(2 ** x[0]), "at_or_below_smallest",
                         f"the learned model already beats the classical {metric} {baseline:.4f} at the "
                         f"smallest size ({size_txt(2 ** x[0])} frames: {y[0]:.4f})")
    x0, x1, y0, y1 = x[first - 1], x[first], y[first - 1], y[first]
    frac = (baseline - y0) / (y1 - y0) if y1 != y0 else 1.0
    xc = x0 + float(np.clip(frac, 0.0, 1.0)) * (x1 - x0)
    return Crossover(metric, baseline, float(2 ** xc), "interpolated",
                     f"learned {metric} crosses the classical {baseline:.4f} at ~{2 ** xc:.0f} frames "
                     f"(between {size_txt(2 ** x0)}: {y0:.4f} and {size_txt(2 ** x1)}: {y1:.4f})")


# ------------------------------------------------------------------------------- compute rule
def compute_plan(frames: int, steps: int, batch_size: int, epochs: int) -> Tuple[int, int, int]:
    """(repeat, epochs, steps) giving about `steps` optimisation steps for a set of `frames`.

    The budget is steps * batch_size samples, spread over about `epochs` epochs; a set too small
    for that is listed `repeat` times per epoch (the same as more epochs, without per-epoch overhead).
    A set larger than the budget still gets one full epoch (the training loop stops at epoch ends).
    """
    if frames < 1 or steps < 1 or batch_size < 1 or epochs < 1:
        raise ConfigError("frames, steps, batch size and epochs must all be >= 1")
    samples = steps * batch_size
    repeat = max(1, int(round(samples / (epochs * frames))))
    n_epochs = max(1, int(round(samples / (repeat * frames))))
    bs = min(batch_size, repeat * frames)
    return repeat, n_epochs, n_epochs * max(1, (repeat * frames) // bs)


# ---------------------------------------------------------------------------------- trainers
@dataclass
class TrainJob:
    """One run of the study."""

    train_dir: str  # a folder dataset of exactly `frames` frames
    val_dir: str
    frames: int
    seed: int
    repeat: int
    epochs: int
    batch_size: int
    model: str
    size: Tuple[int, int]
    min_depth: float
    max_depth: float
    run_dir: str
    threads: int = 1  # torch threads (the machine may be shared)


@dataclass
class TrainedModel:
    """A trained run: `predict(list of RGB uint8) -> list of HxW metres` at each image's size."""

    predict: Callable[[Sequence[np.ndarray]], List[np.ndarray]]
    steps: int
    train_seconds: float
    checkpoint: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)


Trainer = Callable[[TrainJob], TrainedModel]


def _checkpoint_predictor(path: str) -> Callable[[Sequence[np.ndarray]], List[np.ndarray]]:
    from edgedepth.predictor import Predictor

    predictor = Predictor(path)
    return lambda images: [p.depth for p in predictor.predict_many(list(images))]


def library_trainer(job: TrainJob) -> TrainedModel:
    """Train in-process with edgedepth.train (one torch thread: the machine is shared)."""
    from edgedepth.train.config import TrainConfig
    from edgedepth.train.loop import train

    cfg = TrainConfig(data=[job.train_dir] * job.repeat, val=[job.val_dir], out=job.run_dir, model=job.model,
                      size=job.size, epochs=job.epochs, seed=job.seed, batch_size=job.batch_size,
                      min_depth=job.min_depth, max_depth=job.max_depth, threads=job.threads,
                      workers=1, progress=False, name=f"scaling-n{job.frames}-s{job.seed}",
                      frame_weight=0.0,  # the recipe the recorded scaling figures were measured with
                      extra_lineage={"scaling_frames": job.frames, "scaling_repeat": job.repeat})
    t0 = time.perf_counter()
    result = train(cfg)
    ckpt = result.best_checkpoint if Path(result.best_checkpoint).is_file() else result.last_checkpoint
    return TrainedModel(_checkpoint_predictor(str(ckpt)), int(result.steps), time.perf_counter() - t0,
                        str(ckpt),
                        {"best_epoch": result.best_epoch, "val": result.best_metrics})


def cli_trainer(job: TrainJob) -> TrainedModel:
    """Train through the `edgedepth train` command in a subprocess (when the library is unavailable)."""
    import os
    import subprocess
    import sys

    data = ",".join([job.train_dir] * job.repeat)
    cmd = [sys.executable, "-m", "edgedepth", "train", "--data", data, "--val", job.val_dir,
           "--model", job.model, "--size", f"{job.size[0]}x{job.size[1]}", "--epochs", str(job.epochs),
           "--out", job.run_dir, "--seed", str(job.seed), "--batch-size", str(job.batch_size),
           "--min-depth", str(job.min_depth), "--max-depth", str(job.max_depth), "--no-progress",
           "--force"]  # the study owns its run folders: a job rerun starts over
    t0 = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS=str(job.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ConfigError(f"`{' '.join(cmd)}` failed:\n{proc.stderr[-2000:]}")
    run_json = Path(job.run_dir) / "run.json"
    run = json.loads(run_json.read_text()) if run_json.is_file() else {}
    ckpt = Path(job.run_dir) / "best.pt"
    ckpt = ckpt if ckpt.is_file() else Path(job.run_dir) / "last.pt"
    return TrainedModel(_checkpoint_predictor(str(ckpt)), int(run.get("steps", 0)), time.perf_counter() - t0,
                        str(ckpt))


def default_trainer() -> Trainer:
    """The in-process library when it is importable, else the CLI."""
    try:
        from edgedepth.train.loop import train  # noqa: F401
    except ImportError:
        log.warning("edgedepth.train has no train(); the study trains through the `edgedepth train` CLI")
        return cli_trainer
    return library_trainer


# ------------------------------------------------------------------------------------ scoring
def score_predictions(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], min_depth: float,
                      max_depth: float, masks: Optional[Sequence[Optional[np.ndarray]]] = None
                      ) -> Dict[str, float]:
    """Mean per-frame metrics (edgedepth.metrics), optionally only inside per-frame masks."""
    rows = []
    for i, (p, g) in enumerate(zip(preds, gts)):
        m = None if masks is None else masks[i]
        if masks is not None and (m is None or not m.any()):
            rows.append(None)
            continue
        rows.append(frame_metrics(p, g, m, min_depth, max_depth))
    return mean_metrics(rows)


def summarise_runs(rows: Sequence[Dict[str, Any]], key: str = "filled") -> List[Dict[str, Any]]:
    """Per training-set size: mean and std over seeds of every metric of `key`."""
    out = []
    for n in sorted({r["frames"] for r in rows}):
        group = [r for r in rows if r["frames"] == n]
        item: Dict[str, Any] = {"frames": n, "runs": len(group),
                                "steps": float(np.mean([r["steps"] for r in group])),
                                "train_seconds": float(np.mean([r["train_seconds"] for r in group]))}
        for name in METRIC_NAMES:
            vals = np.array([r[key][name] for r in group], np.float64)
            item[name] = float(np.mean(vals))
            item[f"{name}_std"] = float(np.std(vals))
        out.append(item)
    return out


def write_table(path: Path, rows: Sequence[Dict[str, Any]], classical: Dict[str, float]) -> Path:
    """CSV: one row per run plus one `classical` row (frames = 0: it uses no training data)."""
    cols = ["method", "frames", "seed", "steps", "train_seconds"] + list(METRIC_NAMES) + \
        [f"covered_{m}" for m in METRIC_NAMES]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow(["learned", r["frames"], r["seed"], r["steps"], f"{r['train_seconds']:.1f}"]
                       + [f"{r['filled'][m]:.5f}" for m in METRIC_NAMES]
                       + [f"{r['covered'][m]:.5f}" for m in METRIC_NAMES])
        w.writerow(["classical", 0, "", "", ""] + [f"{classical['filled'][m]:.5f}" for m in METRIC_NAMES]
                   + [f"{classical['covered'][m]:.5f}" for m in METRIC_NAMES])
    return path


def plot_study(path: Path, rows: Sequence[Dict[str, Any]], summary: Sequence[Dict[str, Any]],
               classical: Dict[str, Any], crossovers: Dict[str, Crossover], title: str = "",
               fits: Optional[Dict[str, Dict[str, Any]]] = None) -> Path:
    """delta1 and AbsRel against training frames (log2 axis); the classical baseline as horizontal lines;
    `fits` (edgedepth.bench.scaling_fit) as dashed lines, extended towards their extrapolated crossing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    sizes = [s["frames"] for s in summary]
    panels = ((axes[0], "d1", "δ1 (higher is better)"), (axes[1], "abs_rel", "AbsRel (lower is better)"))
    for ax, metric, label in panels:
        ax.scatter([r["frames"] for r in rows], [r["filled"][metric] for r in rows], s=12, color="tab:blue",
                   alpha=0.5, label="learned (each seed)")
        ax.errorbar(sizes, [s[metric] for s in summary], yerr=[s[f"{metric}_std"] for s in summary],
                    color="tab:blue", marker="o", capsize=3, label="learned (mean ± std)")
        ax.axhline(classical["filled"][metric], color="tab:red", label="classical, holes filled (headline)")
        ax.axhline(classical["covered"][metric], color="tab:red", ls=":",
                   label=f"classical, own pixels only ({100 * classical['coverage']:.0f}% covered)")
        fit = (fits or {}).get(metric)
        if fit is not None:
            x0, x_top = min(fit["fit_frames"]), fit["largest_measured"]
            x1 = x_top * 2 if not fit.get("crossing_frames") else \
                min(max(fit["crossing_frames"] * 1.4, x_top * 2), x_top * 64)
            xs = np.geomspace(x0, x1, 50)
            ax.plot(xs, fit["intercept"] + fit["per_doubling"] * np.log2(xs), color="tab:blue", ls="--",
                    lw=1, label=f"log-linear fit: {fit['per_doubling']:+.3f} per doubling")
            if fit.get("crossing_frames") and fit["crossing_frames"] > x_top:
                ax.axvline(fit["crossing_frames"], color="tab:blue", ls=":", lw=1,
                           label=f"extrapolated crossing ~{fit['crossing_frames']:.3g} frames")
        cx = crossovers.get(metric)
        if cx is not None and cx.frames is not None:
            ax.axvline(cx.frames, color="gray", ls="--", label=f"crossover ~{cx.frames:.0f} frames")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training frames")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title or "learned vs classical depth against training-set size", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------- the study
@dataclass
class StudyConfig:
    """The scaling study. Defaults are the full study (fits ~35 min on 2 CPU cores, see the script)."""

    out_dir: str
    sizes: List[int] = field(default_factory=lambda: [2 ** k for k in range(5, 13)])
    seeds: List[int] = field(default_factory=lambda: [0, 1])
    rule: str = "fixed"  # compute rule: "fixed" = `steps` at every size; "proportional" = `epochs`
    # epochs of the set, at least `steps` and at most `max_steps` (bigger sets also get more compute)
    steps: int = 256  # optimisation steps per run (the floor under "proportional")
    epochs: int = 4  # the steps are spread over about this many epochs (small sets repeated in an epoch)
    max_steps: int = 1024  # cap of the "proportional" rule
    batch_size: int = 16
    model: str = "small"
    input_size: Tuple[int, int] = (96, 128)  # network input
    render_size: Tuple[int, int] = (96, 128)  # rendered frames (training and test)
    domain: str = "indoor"
    test_frames: int = 120  # held-out sequence frames (other scenes than the training frames) ...
    test_sequences: int = 8  # ... in this many sequences of one scene each
    val_frames: int = 64  # checkpoint selection set (neither training nor test)
    gap: int = 6  # classical pair: frame t and t + gap
    method: str = "flow"  # classical method
    min_depth: float = 0.1
    max_depth: float = 40.0
    data_seed: int = 0
    threads: int = 1  # torch threads per training run
    render_workers: int = 2  # processes rendering the data (the training set is split into as many shards)

    def validate(self) -> "StudyConfig":
        if not self.sizes or min(self.sizes) < 2 or not self.seeds:
            raise ConfigError("the study needs training sizes >= 2 frames and at least one seed")
        if self.steps < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("steps, epochs and batch size must be >= 1")
        if self.rule not in ("fixed", "proportional"):
            raise ConfigError(f"unknown compute rule {self.rule!r}; use fixed or proportional")
        if self.test_sequences < 1 or self.test_frames // self.test_sequences <= self.gap:
            raise ConfigError(f"each test sequence needs more than gap={self.gap} frames: raise "
                              f"--test-frames or lower --test-sequences ({self.test_frames} frames in "
                              f"{self.test_sequences})")
        return self


def target_steps(cfg: StudyConfig, frames: int) -> int:
    """Optimisation steps a run on `frames` frames gets under the study's compute rule."""
    if cfg.rule == "fixed":
        return cfg.steps
    return int(min(cfg.max_steps, max(cfg.steps, round(cfg.epochs * frames / cfg.batch_size))))


def rule_text(cfg: StudyConfig) -> str:
    if cfg.rule == "fixed":
        return (f"about {cfg.steps} optimisation steps of batch {cfg.batch_size} per run at every size, over "
                f"~{cfg.epochs} epochs (small sets repeated within an epoch)")
    return (f"{cfg.epochs} epochs of the training set per run (batch {cfg.batch_size}), at least "
            f"{cfg.steps} and at most {cfg.max_steps} steps (small sets repeated within an epoch)")


@dataclass
class StudyData:
    train: Callable[[int], str]  # n -> a folder dataset holding exactly the first n training frames
    val_dir: str  # checkpoint selection (neither training nor test scenes)
    test: List[Any]  # SeqFrames of held-out sequences (poses + intrinsics)


def prepare_data(cfg: StudyConfig) -> StudyData:
    """Render (or reuse) the training shards, validation and held-out sequence sets under out_dir/data."""
    from edgedepth.bench.classical_eval import load_sequence
    from edgedepth.bench.scaling_data import build_subset, frame_list, render_sets

    root = Path(cfg.out_dir) / "data"
    shards = max(1, cfg.render_workers)
    per_shard = -(-max(cfg.sizes) // shards)
    base = cfg.data_seed * 1000  # seeds far apart: no scene is shared between the sets

    def spec(frames: int, seed: int, sequence: bool) -> Dict[str, Any]:
        return {"frames": frames, "seed": seed, "sequence": sequence, "size": list(cfg.render_size),
                "domain": cfg.domain}

    jobs = {f"train{k}": spec(per_shard, base + 11 + k, False) for k in range(shards)}
    jobs["val"] = spec(cfg.val_frames, base + 2, False)
    per_seq = cfg.test_frames // cfg.test_sequences
    tests = [f"test{k}" for k in range(cfg.test_sequences)]
    jobs.update({name: spec(per_seq, base + 101 + k, True) for k, name in enumerate(tests)})
    seconds = render_sets(jobs, root, cfg.render_workers)
    for name, sec in seconds.items():
        log.info("rendered %s (%d frames) in %.0f s", name, jobs[name]["frames"], sec)
    order = frame_list([root / f"train{k}" for k in range(shards)])
    test = [f for name in tests for f in load_sequence(str(root / name))]
    return StudyData(train=lambda n: str(build_subset(order[:n], root / f"train_n{n:05d}")),
                     val_dir=str(root / "val"), test=test)


def _finished_run(path: Path, plan: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """A run's result.json when it was trained and scored under the same settings (resume), else None."""
    if not path.is_file():
        return None
    previous = json.loads(path.read_text())
    if previous.get("plan") == plan:
        return previous
    log.info("re-running %s: it was made with other settings", path.parent.name)
    return None


def _train_and_score(job: TrainJob, trainer: Trainer, plan: Dict[str, Any], rgbs: List[np.ndarray],
                     gts: List[np.ndarray], masks: List[Any]) -> Dict[str, Any]:
    """Train one run, score it on the test frames (all pixels, and the classical method's pixels), and
    write RUN_DIR/result.json."""
    trained = trainer(job)
    preds = trained.predict(rgbs)
    lo, hi = job.min_depth, job.max_depth
    row = {"frames": job.frames, "seed": job.seed, "repeat": job.repeat, "epochs": job.epochs,
           "steps": trained.steps, "train_seconds": trained.train_seconds, "checkpoint": trained.checkpoint,
           "plan": plan, "filled": score_predictions(preds, gts, lo, hi),
           "covered": score_predictions(preds, gts, lo, hi, masks), **trained.extra}
    write_bytes_atomic(Path(job.run_dir) / "result.json", json.dumps(row, indent=1, default=float).encode())
    return row


def run_study(cfg: StudyConfig, trainer: Optional[Trainer] = None, data: Optional[StudyData] = None,
              progress: Callable[[str], None] = log.info) -> Dict[str, Any]:
    """Run (or resume) the study; writes scaling.json, scaling.csv and scaling.png into cfg.out_dir."""
    cfg.validate()
    t_study = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = data or prepare_data(cfg)
    data_s = time.perf_counter() - t0
    gts = [f.depth for f in data.test]
    rgbs = [f.rgb for f in data.test]

    t0 = time.perf_counter()
    from edgedepth.bench.scaling_data import classical_baseline

    classical, masks = classical_baseline(cfg, data.test, out)
    classical_s = time.perf_counter() - t0
    progress(f"classical {classical['method']}: filled d1 {classical['filled']['d1']:.4f} AbsRel "
             f"{classical['filled']['abs_rel']:.4f}; covered {100 * classical['coverage']:.0f}%: d1 "
             f"{classical['covered']['d1']:.4f} AbsRel {classical['covered']['abs_rel']:.4f}")

    trainer = trainer or default_trainer()
    # A finished run is reused only if it was trained and scored under the same settings.
    plan = {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "sizes", "seeds", "threads",
                                                               "render_workers")}
    plan = json.loads(json.dumps(plan))
    rows: List[Dict[str, Any]] = []
    for n in sorted(cfg.sizes, reverse=True):  # largest first: processes sharing OUT finish together
        repeat, epochs, _ = compute_plan(n, target_steps(cfg, n), cfg.batch_size, cfg.epochs)
        for seed in cfg.seeds:
            run_dir = out / "runs" / f"n{n:05d}_s{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            with try_lock(run_dir / ".lock") as mine:
                if not mine:
                    progress(f"n={n:5d} seed={seed}: another process is training it; skipped")
                    continue
                row = _finished_run(run_dir / "result.json", plan)
                if row is None:
                    job = TrainJob(data.train(n), data.val_dir, n, seed, repeat, epochs, cfg.batch_size,
                                   cfg.model, tuple(cfg.input_size), cfg.min_depth, cfg.max_depth,
                                   str(run_dir), cfg.threads)
                    row = _train_and_score(job, trainer, plan, rgbs, gts, masks)
                    progress(f"n={n:5d} seed={seed}: d1 {row['filled']['d1']:.4f} "
                             f"AbsRel {row['filled']['abs_rel']:.4f} "
                             f"({row['steps']} steps, {row['train_seconds']:.0f} s)")
            rows.append(row)

    summary = summarise_runs(rows, "filled")
    summary_cov = summarise_runs(rows, "covered")
    sizes = [s["frames"] for s in summary]
    crossovers = {m: crossover(sizes, [s[m] for s in summary], classical["filled"][m], m)
                  for m in ("d1", "abs_rel")}
    crossovers_cov = {m: crossover(sizes, [s[m] for s in summary_cov], classical["covered"][m], m)
                      for m in ("d1", "abs_rel")}
    fits = study_fits(cfg, rows, classical)
    result = {
        "config": {**asdict(cfg), "compute_rule": rule_text(cfg)},
        "test_frames": len(data.test), "classical": classical, "runs": rows, "summary": summary,
        "summary_on_classical_pixels": summary_cov,
        "crossover": {m: c.to_dict() for m, c in crossovers.items()},
        "crossover_on_classical_pixels": {m: c.to_dict() for m, c in crossovers_cov.items()},
        "fit": fits,
        "headline": "dense metrics on all ground-truth pixels (classical holes filled with the nearest "
                    "prediction)",
        "wall_seconds": {"data": data_s, "classical": classical_s,
                         "training_and_eval": time.perf_counter() - t_study - data_s - classical_s,
                         "total": time.perf_counter() - t_study},
    }
    (out / "scaling.json").write_text(json.dumps(result, indent=1, default=float))
    write_table(out / "scaling.csv", rows, classical)
    steps_txt = str(cfg.steps) if cfg.rule == "fixed" else f"{cfg.steps}..{cfg.max_steps}"
    plot_study(out / "scaling.png", rows, summary, classical, crossovers,
               f"{cfg.model} model, {cfg.domain}, {len(data.test)} held-out frames; classical "
               f"{classical['method']} (gap {cfg.gap}); compute: {cfg.rule}, {steps_txt} steps/run", fits)
    for c in crossovers.values():
        progress(c.note)
    for f in fits.values():
        progress(f"fit: {f['note']}")
    return result


def format_summary(result: Dict[str, Any]) -> str:
    """The study as a plain-text table."""
    c = result["classical"]
    lines = [f"{'frames':>7} {'runs':>4} {'steps':>6} {'d1':>14} {'AbsRel':>14} {'RMSE':>8}  "
             f"{'d1@classical-px':>15} {'AbsRel@classical-px':>19}"]
    for s, sc in zip(result["summary"], result["summary_on_classical_pixels"]):
        lines.append(f"{s['frames']:>7} {s['runs']:>4} {s['steps']:>6.0f} {s['d1']:>7.4f}±{s['d1_std']:.4f} "
                     f"{s['abs_rel']:>7.4f}±{s['abs_rel_std']:.4f} {s['rmse']:>8.3f}  {sc['d1']:>15.4f} "
                     f"{sc['abs_rel']:>19.4f}")
    lines.append(f"{'classical':>7} filled: d1 {c['filled']['d1']:.4f} AbsRel {c['filled']['abs_rel']:.4f} "
                 f"RMSE {c['filled']['rmse']:.3f} | own pixels ({100 * c['coverage']:.1f}% coverage): d1 "
                 f"{c['covered']['d1']:.4f} AbsRel {c['covered']['abs_rel']:.4f}")
    for key, label in (("crossover", "all pixels"), ("crossover_on_classical_pixels", "classical's pixels")):
        for m, cx in result[key].items():
            lines.append(f"crossover ({label}) {m}: {cx['note']}")
    for m, fit in result.get("fit", {}).items():
        lines.append(f"log-linear fit over {', '.join(f'{v:.0f}' for v in fit['fit_frames'])} frames, {m}: "
                     f"{fit['note']}")
    return "\n".join(lines)
