"""What the scaling curve's slope says: a log-linear fit, metric = a + b * log2(training frames).

`b` is the metric gained per doubling of the training data; where the fitted line meets the classical
baseline is the extrapolated crossing. Its uncertainty comes from a residual bootstrap (the fit's
residuals, pooled over all runs and scaled by sqrt(n / (n - 2)) for the two fitted parameters, resampled
onto the fitted line: with two seeds per size, resampling runs within a size would understate the
spread): the crossing of each resampled fit, reported as the median and a 90 % interval, plus the share
of resamples whose slope never reaches the baseline. An extrapolation beyond the measured sizes assumes
the line goes on; the report says how far beyond the largest measured size it lies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from edgedepth.errors import ConfigError

# metric -> higher is better?
HIGHER_IS_BETTER = {"abs_rel": False, "sq_rel": False, "rmse": False, "rmse_log": False,
                    "d1": True, "d2": True, "d3": True}


def _line(x: np.ndarray, y: np.ndarray):
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def _crossing(a: float, b: float, baseline: float, higher: bool) -> Optional[float]:
    """log2(frames) where the line reaches the baseline moving towards better; None if it moves away."""
    if b == 0 or (b > 0) != higher:
        return None
    return (baseline - a) / b


def loglinear_fit(frames: Sequence[float], values: Sequence[float], baseline: float, metric: str,
                  boot: int = 2000, seed: int = 0) -> Dict[str, Any]:
    """Fit metric = a + b * log2(frames) over runs (one value per run); extrapolate the baseline crossing."""
    if metric not in HIGHER_IS_BETTER:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(HIGHER_IS_BETTER)}")
    x = np.log2(np.asarray(frames, np.float64))
    y = np.asarray(values, np.float64)
    sizes = np.unique(x)
    if len(x) != len(y) or len(sizes) < 2:
        raise ConfigError("a log-linear fit needs values at two or more training-set sizes")
    higher = HIGHER_IS_BETTER[metric]
    a, b = _line(x, y)
    resid = y - (a + b * x)
    dof = len(x) - 2
    se_b = float(np.sqrt(resid @ resid / dof / np.sum((x - x.mean()) ** 2))) if dof > 0 else float("nan")
    at = _crossing(a, b, baseline, higher)
    rng = np.random.default_rng(seed)
    fitted = a + b * x
    scaled = resid * np.sqrt(len(x) / dof) if dof > 0 else resid
    cross, never = [], 0
    for _ in range(boot):
        ab, bb = _line(x, fitted + rng.choice(scaled, size=len(x), replace=True))
        c = _crossing(ab, bb, baseline, higher)
        if c is None:
            never += 1
        else:
            cross.append(c)
    out: Dict[str, Any] = {
        "metric": metric, "baseline": float(baseline), "intercept": a, "per_doubling": b,
        "per_doubling_se": se_b, "fit_frames": [float(v) for v in sorted(set(2 ** x))],
        "runs": int(len(x)), "bootstrap": int(boot), "bootstrap_never": never / boot,
        "largest_measured": float(2 ** x.max()),
    }
    if at is None:
        out.update(crossing_frames=None, note=(
            f"{metric} changes by {b:+.4f} ± {se_b:.4f} per doubling of the data, away from (or parallel "
            f"to) the classical {baseline:.4f}: the fit predicts no crossing"))
        return out
    out["crossing_frames"] = float(2 ** at)
    out["crossing_doublings_beyond_largest"] = float(at - x.max())
    if cross:
        lo, med, hi = np.percentile(cross, [5, 50, 95])
        out.update(crossing_median=float(2 ** med), crossing_90=[float(2 ** lo), float(2 ** hi)])
    where = ("within the measured sizes" if at <= x.max() else
             f"{at - x.max():.1f} doublings beyond the largest measured size ({2 ** x.max():.0f} frames)")
    interval = (f"; bootstrap 90 % interval {out['crossing_90'][0]:.3g}..{out['crossing_90'][1]:.3g} frames"
                if cross else "")
    out["note"] = (f"{metric} changes by {b:+.4f} ± {se_b:.4f} per doubling of the data; the fitted line "
                   f"meets the classical {baseline:.4f} at ~{2 ** at:.3g} frames ({where}){interval}; "
                   f"{100 * never / boot:.0f} % of resamples never reach it")
    return out


def study_fits(cfg: Any, rows: Sequence[Dict[str, Any]], classical: Dict[str, Any]
               ) -> Dict[str, Dict[str, Any]]:
    """Log-linear fits of d1 and AbsRel (all pixels) against training frames (cfg: a StudyConfig), over
    the runs whose compute follows the study's rule unclamped (under "proportional", the sizes between the
    step floor and cap): a slope measured there says what more data with its compute buys."""
    def unclamped(n: int) -> bool:
        return cfg.rule == "fixed" or cfg.steps <= cfg.epochs * n / cfg.batch_size <= cfg.max_steps

    use = [r for r in rows if unclamped(r["frames"])]
    if len({r["frames"] for r in use}) < 2:
        return {}
    return {m: loglinear_fit([r["frames"] for r in use], [r["filled"][m] for r in use],
                             classical["filled"][m], m) for m in ("d1", "abs_rel")}



def study_record(result: Dict[str, Any], folder: Optional[Path] = None) -> Optional[Path]:
    """The study's figures as one result record: folder/scaling_proportional.json for the proportional
    compute rule, folder/scaling_study.json for the fixed one (folder defaults to $EDGEDEPTH_RESULTS)."""
    from edgedepth.bench.record import record_results

    cfg, c = result["config"], result["classical"]
    figures = [{"figure": f"classical on the {result['test_frames']} held-out frames (holes filled): "
                          "δ1 / AbsRel / RMSE",
                "value": " / ".join(f"{c['filled'][m]:.4f}" for m in ("d1", "abs_rel", "rmse"))}]
    for s in result["summary"]:
        figures.append({"figure": f"learned, {s['frames']} frames ({s['runs']} seeds, {s['steps']:.0f} "
                                  "steps): δ1 / AbsRel / RMSE (mean ± sd)",
                        "value": f"{s['d1']:.4f} ± {s['d1_std']:.4f} / {s['abs_rel']:.4f} ± "
                                 f"{s['abs_rel_std']:.4f} / {s['rmse']:.4f} ± {s['rmse_std']:.4f}"})
    for m, cx in result["crossover"].items():
        figures.append({"figure": f"crossover on {m} (measured points)", "value": cx["note"]})
    for m, fit in result.get("fit", {}).items():
        figures.append({"figure": f"log-linear fit of {m}: change per doubling of the data",
                        "value": f"{fit['per_doubling']:+.4f} ± {fit['per_doubling_se']:.4f}"})
        figures.append({"figure": f"log-linear fit of {m}: extrapolated crossing", "value": fit["note"]})
    scale = (f"{cfg['model']} model at {cfg['input_size'][0]}x{cfg['input_size'][1]}, frames rendered at "
             f"{cfg['render_size'][0]}x{cfg['render_size'][1]}, {cfg['domain']}; "
             f"compute: {cfg['compute_rule']}")
    proportional = cfg.get("rule") == "proportional"
    name = "scaling_proportional" if proportional else "scaling_study"
    title = ("Learned vs classical two-frame depth, compute proportional to data" if proportional else
             "Learned vs classical two-frame depth, the same compute at every size")
    return record_results(name, title, figures,
                          notes=[f"scale: {scale}"], out_dir=folder,
                          data={k: result[k] for k in ("config", "summary", "crossover", "fit", "classical")
                                if k in result})
