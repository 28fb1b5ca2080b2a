"""The simulation's verdict: a table (mean ± sd over seeds), the acceptance checks, a PNG plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from edgedepth.sim.cycle import mean_sd

# acceptance targets (relative): see `acceptance`
HARD_GAIN_MIN = 0.30
HARD_VS_RANDOM_MIN = 0.15
DUPLICATE_GAIN_MAX = 0.05
ORIGINAL_REGRESSION_MAX = 0.02


def curve(result: dict, strategy: str, seed: str, group: str, metric: str) -> List[float]:
    """Deployed-model metric per round (round 0 = the shared base model) for one strategy and seed."""
    vals = [result["base"][group][metric]]
    for rec in result["runs"][strategy][seed]:
        vals.append(rec["deployed_metrics"][group][metric])
    return vals


def _fmt(m: float, sd: float, digits: int = 3) -> str:
    if not math.isfinite(m):
        return "n/a"
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def table(result: dict) -> str:
    rows = [("strategy", "round", "shifted AbsRel", "shifted d1", "original AbsRel", "original d1",
             "uploaded", "promoted", "shifted share of uploads")]
    for strategy, per_seed in result["runs"].items():
        seeds = sorted(per_seed)
        rounds = len(per_seed[seeds[0]])
        for r in range(rounds + 1):
            cells = []
            for group, metric in (("shifted", "abs_rel"), ("shifted", "d1"), ("original", "abs_rel"),
                                  ("original", "d1")):
                cells.append(_fmt(*mean_sd([curve(result, strategy, s, group, metric)[r] for s in seeds])))
            if r == 0:
                up, promoted, share = "-", "-", "-"
            else:
                recs = [per_seed[s][r - 1] for s in seeds]
                up = _fmt(*mean_sd([float(x["uploaded"]) for x in recs]), digits=0)
                promoted = f"{sum(1 for x in recs if x['promoted'])}/{len(recs)}"
                share = _fmt(*mean_sd([shifted_share(x, result["config"]["original_domain"]) for x in recs]),
                             digits=2)
            rows.append((strategy, str(r), *cells, up, promoted, share))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def shifted_share(rec: dict, original: str) -> float:
    """Fraction of the frames a round built (new, deduplicated, labelled) that come from shifted domains."""
    doms = dict(rec.get("build", {}).get("domains", {}))
    replay = rec.get("build", {}).get("replay", 0)
    doms[original] = doms.get(original, 0) - replay  # replay frames are original-domain training copies
    total = sum(v for v in doms.values() if v > 0)
    if total <= 0:
        return float("nan")
    return sum(v for d, v in doms.items() if d != original and d != "unknown" and v > 0) / total


def _rel_gain(before: float, after: float) -> float:
    return (before - after) / before if before else float("nan")


def acceptance(result: dict) -> List[Tuple[str, float, float, Optional[bool]]]:
    """(check, mean, sd, passed) of the acceptance criteria at the last round (None: not measurable)."""
    runs = result["runs"]
    checks: List[Tuple[str, float, float, Optional[bool]]] = []

    def final(strategy: str, group: str) -> Dict[str, float]:
        return {s: curve(result, strategy, s, group, "abs_rel")[-1] for s in runs.get(strategy, {})}

    base_shift = result["base"]["shifted"]["abs_rel"]
    base_orig = result["base"]["original"]["abs_rel"]
    if "hard" in runs:
        hard = final("hard", "shifted")
        m, sd = mean_sd([_rel_gain(base_shift, v) for v in hard.values()])
        checks.append((f"hard: shifted AbsRel reduction vs round 0 >= {HARD_GAIN_MIN:.0%}", m, sd,
                       m >= HARD_GAIN_MIN))
        orig = final("hard", "original")
        m, sd = mean_sd([-_rel_gain(base_orig, v) for v in orig.values()])
        checks.append((f"hard: original-domain AbsRel regression <= {ORIGINAL_REGRESSION_MAX:.0%}", m, sd,
                       m <= ORIGINAL_REGRESSION_MAX))
        if "random" in runs:
            rnd = final("random", "shifted")
            common = sorted(set(hard) & set(rnd))
            m, sd = mean_sd([_rel_gain(rnd[s], hard[s]) for s in common])
            checks.append((f"hard vs random: shifted AbsRel lower by >= {HARD_VS_RANDOM_MIN:.0%}", m, sd,
                           m >= HARD_VS_RANDOM_MIN))
    if "duplicate" in runs:
        dup = final("duplicate", "shifted")
        m, sd = mean_sd([_rel_gain(base_shift, v) for v in dup.values()])
        checks.append((f"duplicate: shifted AbsRel reduction <= {DUPLICATE_GAIN_MAX:.0%}", m, sd,
                       m <= DUPLICATE_GAIN_MAX))
    for strategy in runs:
        if strategy == "hard":
            continue
        orig = final(strategy, "original")
        m, sd = mean_sd([-_rel_gain(base_orig, v) for v in orig.values()])
        checks.append((f"{strategy}: original-domain AbsRel change (info)", m, sd, None))
    return checks


def acceptance_text(result: dict) -> str:
    lines = []
    for name, m, sd, ok in acceptance(result):
        verdict = "info" if ok is None else ("PASS" if ok else "FAIL")
        lines.append(f"  {verdict:4s}  {name}: {m * 100:+.1f}% ± {sd * 100:.1f}%")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """AbsRel and d1 on the shifted and original domains per round, one line per strategy (± sd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    panels = [("shifted", "abs_rel", "AbsRel, shifted domains"), ("original", "abs_rel", "AbsRel, original"),
              ("shifted", "d1", "δ1, shifted domains"), ("original", "d1", "δ1, original")]
    colors = {"hard": "tab:red", "random": "tab:blue", "duplicate": "tab:gray"}
    for ax, (group, metric, title) in zip(axes.ravel(), panels):
        for strategy, per_seed in result["runs"].items():
            seeds = sorted(per_seed)
            curves = [curve(result, strategy, s, group, metric) for s in seeds]
            xs = list(range(len(curves[0])))
            stats = [mean_sd([c[i] for c in curves]) for i in xs]
            ax.errorbar(xs, [m for m, _ in stats], yerr=[sd for _, sd in stats], label=strategy, marker="o",
                        capsize=3, color=colors.get(strategy))
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
    axes[0, 0].legend()
    cfg = result["config"]
    fig.suptitle(f"edgedepth fleet simulation: {len(cfg['seeds'])} seed(s), {cfg['devices']} devices, "
                 f"budget {cfg['budget_per_device']} uploads/device/round")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
