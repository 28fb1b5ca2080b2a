"""Data efficiency of the fleet loop: the simulation swept over the upload budget.

Every point of the sweep is one `run_simulation` (edgedepth.sim.simulate) at one budget and one seed,
in its own folder WORKDIR/points/b<budget>-s<seed> that shares WORKDIR/shared (the round-0 model and the
evaluation sets, whose identity does not depend on the budget). A finished point is reused when its
configuration matches, so an interrupted sweep resumes and several processes (one per seed) can share a
work dir once the shared round-0 model exists.

The result is reported the way active-learning results are: the deployed model's shifted-domain (and
original-domain) AbsRel after the last round against the frames actually uploaded, mean and spread over
seeds; how many uploads hard selection needs to match random selection's result at the largest budget;
and the bytes uploaded per point (0.01) of shifted-domain AbsRel gained over the round-0 model.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from edgedepth.errors import ConfigError
from edgedepth.fsutil import try_lock
from edgedepth.sim.config import SimConfig

POINT_KEYS_IGNORED = ("workdir", "seeds", "budget_per_device", "progress")


def point_dir(workdir: Path, budget: int, seed: int) -> Path:
    return Path(workdir) / "points" / f"b{budget:03d}-s{seed}"


def _same_recipe(a: dict, b: dict) -> bool:
    strip = lambda d: {k: v for k, v in d.items() if k not in POINT_KEYS_IGNORED}  # noqa: E731
    return json.loads(json.dumps(strip(a), default=list)) == json.loads(json.dumps(strip(b), default=list))


def finished_point(folder: Path, cfg: SimConfig) -> Optional[dict]:
    """The point's simulation.json if it ran to the end under this configuration, else None."""
    path = Path(folder) / "simulation.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except ValueError:
        return None
    if "plot" not in result or not _same_recipe(result.get("config", {}), cfg.to_dict()):
        return None
    if result["config"].get("budget_per_device") != cfg.budget_per_device:
        return None
    runs = result.get("runs", {})
    if any(str(s) not in runs.get(strat, {}) for strat in cfg.strategies for s in cfg.seeds):
        return None
    return result


def run_sweep(base: SimConfig, budgets: Sequence[int], seeds: Sequence[int],
              say: Callable[[str], None] = print) -> List[dict]:
    """Run (or reuse) every (budget, seed) point; returns the point results (simulation.json dicts)."""
    from edgedepth.sim.simulate import run_simulation

    if not budgets or not seeds:
        raise ConfigError("the sweep needs at least one budget and one seed")
    workdir = Path(base.workdir)
    shared = workdir / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in seeds:  # seed-major: a sweep cut short still has whole curves for its first seeds
        for budget in budgets:
            folder = point_dir(workdir, budget, seed)
            cfg = replace(base, workdir=str(folder), seeds=[int(seed)], budget_per_device=int(budget))
            cfg.validate()
            done = finished_point(folder, cfg)
            if done is not None:
                say(f"[sweep] budget {budget} seed {seed}: reusing {folder}/simulation.json")
                out.append(done)
                continue
            folder.mkdir(parents=True, exist_ok=True)
            with try_lock(folder / ".lock") as mine:
                if not mine:
                    say(f"[sweep] budget {budget} seed {seed}: another process is running it; skipped")
                    continue
                link = folder / "shared"
                if not link.exists():
                    link.symlink_to(Path("..") / ".." / "shared", target_is_directory=True)
                say(f"[sweep] budget {budget} seed {seed}: running")
                out.append(run_simulation(cfg, say=say))
    return out



def collect_points(workdir: Path, base: SimConfig) -> List[dict]:
    """Every finished point under WORKDIR/points made with the same recipe as `base` (any budget/seed)."""
    out = []
    for path in sorted((Path(workdir) / "points").glob("b*-s*/simulation.json")):
        try:
            result = json.loads(path.read_text())
        except ValueError:
            continue
        cfg = result.get("config", {})
        if "plot" in result and _same_recipe(cfg, base.to_dict()):
            out.append(result)
    return out


def point_rows(results: Sequence[dict]) -> List[Dict[str, Any]]:
    """One row per (strategy, budget, seed): frames and bytes uploaded over all rounds, and the deployed
    model's metrics after the last round (the gate may have kept an earlier model)."""
    rows = []
    for result in results:
        budget = int(result["config"]["budget_per_device"])
        base = result["base"]
        for strategy, per_seed in result["runs"].items():
            for seed, recs in per_seed.items():
                last = recs[-1]["deployed_metrics"]
                rows.append({
                    "strategy": strategy, "budget": budget, "seed": int(seed),
                    "uploaded": int(sum(r["uploaded"] for r in recs)),
                    "bytes": int(sum(r.get("upload_bytes", 0) for r in recs)),
                    "promoted": int(sum(1 for r in recs if r["promoted"])), "rounds": len(recs),
                    "shifted_abs_rel": float(last["shifted"]["abs_rel"]),
                    "shifted_d1": float(last["shifted"]["d1"]),
                    "original_abs_rel": float(last["original"]["abs_rel"]),
                    "original_d1": float(last["original"]["d1"]),
                    "base_shifted_abs_rel": float(base["shifted"]["abs_rel"]),
                    "base_original_abs_rel": float(base["original"]["abs_rel"]),
                })
    return sorted(rows, key=lambda r: (r["strategy"], r["budget"], r["seed"]))


def _mean_sd(vals: Sequence[float]):
    a = np.asarray(vals, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarise(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per (strategy, budget): mean and sd over seeds; bytes per 0.01 of shifted AbsRel gained."""
    out = []
    for strategy in sorted({r["strategy"] for r in rows}):
        for budget in sorted({r["budget"] for r in rows if r["strategy"] == strategy}):
            group = [r for r in rows if r["strategy"] == strategy and r["budget"] == budget]
            item: Dict[str, Any] = {"strategy": strategy, "budget": budget,
                                    "seeds": [r["seed"] for r in group],
                                    "promoted": sum(r["promoted"] for r in group),
                                    "rounds": sum(r["rounds"] for r in group)}
            for key in ("uploaded", "bytes", "shifted_abs_rel", "shifted_d1", "original_abs_rel",
                        "original_d1"):
                item[key], item[key + "_sd"] = _mean_sd([r[key] for r in group])
            gain = float(np.mean([r["base_shifted_abs_rel"] - r["shifted_abs_rel"] for r in group]))
            item["shifted_gain"] = gain
            item["bytes_per_point"] = item["bytes"] / (gain * 100) if gain > 0 else float("nan")
            out.append(item)
    return out


def uploads_to_match(xs: Sequence[float], ys: Sequence[float], target: float) -> Dict[str, Any]:
    """Fewest uploads at which a lower-is-better curve (xs uploads, ys metric) reaches `target`,
    interpolated linearly in log2(uploads) between the sweep's points.

    kind: "interpolated", "at_or_below_smallest" (the first point already reaches it: the frames
    needed are at most that point's) or "never" (not reached within the sweep)."""
    order = np.argsort(xs)
    x = np.asarray(xs, np.float64)[order]
    y = np.asarray(ys, np.float64)[order]
    if not len(x):
        raise ConfigError("no points to interpolate")
    if y[0] <= target:
        return {"frames": float(x[0]), "kind": "at_or_below_smallest"}
    for i in range(1, len(x)):
        if y[i] <= target:
            lx0, lx1 = math.log2(max(x[i - 1], 1e-9)), math.log2(max(x[i], 1e-9))
            frac = (y[i - 1] - target) / (y[i - 1] - y[i])
            return {"frames": float(2 ** (lx0 + frac * (lx1 - lx0))), "kind": "interpolated"}
    return {"frames": None, "kind": "never"}


def match_random(summary: Sequence[Dict[str, Any]], metric: str = "shifted_abs_rel") -> Dict[str, Any]:
    """How many uploads hard selection needs to equal random's mean `metric` at random's largest budget."""
    hard = [s for s in summary if s["strategy"] == "hard"]
    rnd = [s for s in summary if s["strategy"] == "random"]
    if not hard or not rnd:
        return {"note": "needs both the hard and the random strategy"}
    top = max(rnd, key=lambda s: s["budget"])
    m = uploads_to_match([s["uploaded"] for s in hard], [s[metric] for s in hard], top[metric])
    out = {"metric": metric, "random_budget": top["budget"], "random_uploaded": top["uploaded"],
           "random_value": top[metric], "hard_frames": m["frames"], "kind": m["kind"]}
    if m["frames"] is not None and top["uploaded"] > 0:
        out["ratio"] = m["frames"] / top["uploaded"]
        bound = "at most " if m["kind"] == "at_or_below_smallest" else ""
        out["note"] = (f"hard reaches random's {metric} {top[metric]:.4f} (budget {top['budget']}, "
                       f"{top['uploaded']:.0f} frames uploaded) with {bound}{m['frames']:.0f} uploads: "
                       f"{bound}{out['ratio']:.2f}x random's uploads")
    else:
        out["ratio"] = None
        out["note"] = (f"hard does not reach random's {metric} {top[metric]:.4f} (budget {top['budget']}) "
                       f"at any budget of the sweep")
    return out


TABLE_COLUMNS = ("strategy", "budget", "uploaded", "MB", "shifted AbsRel", "original AbsRel", "promoted",
                 "MB / 0.01 AbsRel")


def table_rows(summary: Sequence[Dict[str, Any]]) -> List[List[str]]:
    """The summary as text cells under TABLE_COLUMNS (mean ± sd over seeds)."""
    rows = []
    for s in summary:
        bpp = s["bytes_per_point"]
        rows.append([s["strategy"], str(s["budget"]), f"{s['uploaded']:.0f} ± {s['uploaded_sd']:.0f}",
                     f"{s['bytes'] / 1e6:.2f}", f"{s['shifted_abs_rel']:.3f} ± {s['shifted_abs_rel_sd']:.3f}",
                     f"{s['original_abs_rel']:.3f} ± {s['original_abs_rel_sd']:.3f}",
                     f"{s['promoted']}/{s['rounds']}", "n/a (no gain)" if bpp != bpp else f"{bpp / 1e6:.3f}"])
    return rows


def format_table(summary: Sequence[Dict[str, Any]]) -> str:
    rows = [list(TABLE_COLUMNS)] + table_rows(summary)
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_sweep(path: Path, rows: Sequence[Dict[str, Any]], summary: Sequence[Dict[str, Any]],
               match: Dict[str, Any], title: str = "") -> Path:
    """Shifted- and original-domain AbsRel against frames uploaded (log2 axis), one line per strategy,
    mean ± sd over seeds (both axes), each seed as a dot; the round-0 model and random's top as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"hard": "tab:red", "random": "tab:blue", "duplicate": "tab:gray"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    for ax, metric, label in ((axes[0], "shifted_abs_rel", "AbsRel, shifted domains"),
                              (axes[1], "original_abs_rel", "AbsRel, original domain")):
        for strategy in sorted({s["strategy"] for s in summary}):
            pts = sorted((s for s in summary if s["strategy"] == strategy), key=lambda s: s["uploaded"])
            c = colors.get(strategy)
            ax.scatter([r["uploaded"] for r in rows if r["strategy"] == strategy],
                       [r[metric] for r in rows if r["strategy"] == strategy], s=10, alpha=0.4, color=c)
            ax.errorbar([p["uploaded"] for p in pts], [p[metric] for p in pts],
                        xerr=[p["uploaded_sd"] for p in pts], yerr=[p[metric + "_sd"] for p in pts],
                        marker="o", capsize=3, color=c, label=f"{strategy} (mean ± sd)")
            for p in pts:
                ax.annotate(str(p["budget"]), (p["uploaded"], p[metric]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color=c)
        if rows:
            ax.axhline(rows[0]["base_" + metric], color="black", ls=":", label="round-0 model")
        if metric == match.get("metric") and match.get("random_value") is not None:
            ax.axhline(match["random_value"], color="tab:blue", ls="--", lw=0.8,
                       label="random at its largest budget")
            bound = "<= " if match.get("kind") == "at_or_below_smallest" else ""
            if match.get("hard_frames"):
                ax.axvline(match["hard_frames"], color="tab:red", ls="--", lw=0.8,
                           label=f"hard matches it: {bound}{match['hard_frames']:.0f} uploads")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("frames uploaded, all rounds (labels: budget per device per round)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or "fleet simulation: AbsRel against frames uploaded", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
