"""Standard monocular depth metrics (Eigen et al. 2014), numpy only (no torch), usable on a device.

Conventions (shared by training validation, `edgedepth eval` and the improvement loop):
- valid pixels: ground truth finite, > 0 and, when a depth range is given, inside [min_depth, max_depth];
- predictions are clipped to the model's depth range [min_depth, max_depth] before scoring;
- a dataset's figure is the mean of per-frame figures (the Monodepth/Eigen evaluation habit), so a
  frame with few valid pixels counts as much as a full one; frames with no valid pixel are skipped.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

# Metric name -> (short description, lower is better?)
METRICS: Dict[str, tuple] = {
    "abs_rel": ("mean |d - d*| / d*", True),
    "sq_rel": ("mean (d - d*)^2 / d*", True),
    "rmse": ("sqrt mean (d - d*)^2 [m]", True),
    "rmse_log": ("sqrt mean (log d - log d*)^2", True),
    "d1": ("fraction max(d/d*, d*/d) < 1.25", False),
    "d2": ("fraction max(d/d*, d*/d) < 1.25^2", False),
    "d3": ("fraction max(d/d*, d*/d) < 1.25^3", False),
}
METRIC_NAMES = tuple(METRICS)


def valid_mask(gt: np.ndarray, min_depth: Optional[float] = None, max_depth: Optional[float] = None
               ) -> np.ndarray:
    """Pixels with usable ground truth (finite, > 0, inside the range when one is given)."""
    gt = np.asarray(gt)
    mask = np.isfinite(gt) & (gt > 0)
    if min_depth is not None:
        mask &= gt >= min_depth
    if max_depth is not None:
        mask &= gt <= max_depth
    return mask


def frame_metrics(pred: np.ndarray, gt: np.ndarray, valid: Optional[np.ndarray] = None,
                  min_depth: Optional[float] = None, max_depth: Optional[float] = None
                  ) -> Optional[Dict[str, float]]:
    """The seven metrics for one frame, or None when it has no valid pixel.

    `pred` and `gt` are HxW metres of the same shape; `valid` (bool HxW) is and-ed with the
    ground-truth mask. Predictions are clipped to [min_depth, max_depth] where given.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    mask = valid_mask(gt, min_depth, max_depth)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    if not mask.any():
        return None
    p = pred[mask]
    g = gt[mask]
    lo = min_depth if min_depth is not None else 1e-6
    p = np.clip(p, lo, max_depth if max_depth is not None else np.inf)
    p = np.where(np.isfinite(p), p, lo)
    diff = p - g
    ratio = np.maximum(p / g, g / p)
    log_diff = np.log(p) - np.log(g)
    log_scale = float(np.median(log_diff))
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff ** 2 / g)),
        "rmse": float(np.sqrt(np.mean(diff ** 2))),
        "rmse_log": float(np.sqrt(np.mean(log_diff ** 2))),
        "d1": float(np.mean(ratio < 1.25)),
        "d2": float(np.mean(ratio < 1.25 ** 2)),
        "d3": float(np.mean(ratio < 1.25 ** 3)),
        # the frame's error split into a global scale (median log ratio) and what is left once the
        # scale is corrected (the scale-invariant part); not averaged into the tables
        "log_scale": log_scale,
        "si_abs_log": float(np.mean(np.abs(log_diff - log_scale))),
    }


def mean_metrics(per_frame: Iterable[Optional[Dict[str, float]]]) -> Dict[str, float]:
    """Average per-frame metric dicts (None entries skipped); adds `frames` (count averaged)."""
    rows = [r for r in per_frame if r is not None]
    out: Dict[str, float] = {name: float("nan") for name in METRIC_NAMES}
    if rows:
        for name in METRIC_NAMES:
            out[name] = float(np.mean([r[name] for r in rows]))
    out["frames"] = len(rows)
    return out


def depth_metrics(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray],
                  min_depth: Optional[float] = None, max_depth: Optional[float] = None) -> Dict[str, float]:
    """Dataset metrics: the mean over frames of `frame_metrics` (see the module docstring)."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground-truth frames")
    return mean_metrics(frame_metrics(p, g, None, min_depth, max_depth) for p, g in zip(preds, gts))


FRAME_UNCERTAINTY_METHODS = ("mean_b", "mean_u", "median_b", "q90_b")


def frame_uncertainty(uncertainty: np.ndarray, valid: Optional[np.ndarray] = None, method: str = "mean_b"
                      ) -> float:
    """One score per frame from the uncertainty map u = log b (higher = the frame is expected to be worse).

    The default, `mean_b`, is the mean over pixels of b = exp(u): under the Laplace model b is the
    expected |log-depth error| of a pixel, so its mean is the frame's expected mean |log error|, which
    tracks per-frame AbsRel; training fits exactly this quantity (edgedepth.train.losses
    .frame_uncertainty_nll). It ranks held-out frames by error best of the aggregations measured
    (mean of u, median or 90th percentile of b). `valid` (bool, same shape) restricts the pixels; the
    runtime passes none (all pixels), as evaluation does. Any leading singleton axes are ignored.
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    if valid is not None:
        u = u[np.broadcast_to(np.asarray(valid, dtype=bool), u.shape)]
    u = u[np.isfinite(u)]
    if u.size == 0:
        return float("nan")
    if method == "mean_b":
        return float(np.exp(u).mean())
    if method == "mean_u":
        return float(u.mean())
    if method == "median_b":
        return float(np.exp(np.median(u)))
    if method == "q90_b":
        return float(np.exp(np.quantile(u, 0.9)))
    raise ValueError(f"unknown frame uncertainty method {method!r}; use one of {FRAME_UNCERTAINTY_METHODS}")


def rankdata(values: Sequence[float]) -> np.ndarray:
    """Ranks starting at 1, ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two equal-length sequences (nan if undefined)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"spearman needs equal lengths, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 2:
        return float("nan")
    ra, rb = rankdata(a[keep]), rankdata(b[keep])
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def format_metrics_table(rows: Dict[str, Dict[str, float]], title: str = "") -> str:
    """A plain-text table: one row per named metric dict (e.g. 'all', 'indoor', 'night')."""
    header = ["set", "frames", "AbsRel", "SqRel", "RMSE", "RMSElog", "d<1.25", "d<1.25^2", "d<1.25^3"]
    lines: List[List[str]] = [header]
    for name, m in rows.items():
        lines.append([name, str(int(m.get("frames", 0)))] + [
            "nan" if not np.isfinite(m.get(k, np.nan)) else f"{m[k]:.4f}" for k in METRIC_NAMES])
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in lines]
    text.insert(1, "-" * len(text[0]))
    if title:
        text.insert(0, title)
    return "\n".join(text)
